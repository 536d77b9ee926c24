"""The benchmark suite's parts measure what they say (smoke runs; no speed is asserted here)."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import ROOT, STREAMRNN
from streamrnn.dev import bench
from streamrnn.runtime import StreamingModel

COMMANDS = ROOT / "streamrnn" / "models" / "commands.onnx"


def test_one_stream_cost_per_chunk_size():
    frame_ms = 1000 * StreamingModel(COMMANDS).info.frame_seconds  # 80 ms on the encoder
    for frames in (1, 4):
        result = bench.stream_cost(COMMANDS, frames, seconds=1.0, repeats=2)
        assert result["chunk_ms"] == frames * frame_ms
        cost = result["cpu_per_audio_s"]
        assert 0 < cost["min"] <= cost["median"] <= cost["max"] < 1 and cost["runs"] == 2


def test_batched_streams_and_gpu_skip():
    result = bench.batched_cost(COMMANDS, 4, seconds=0.5, repeats=1)
    assert result["streams"] == 4 and result["streams_per_core"] > 4
    gpu = bench.gpu_streams(quick=True)
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        assert "no CUDAExecutionProvider" in gpu["skipped"]


def test_service_latency_counts_from_hand_over_to_subscriber():
    result = bench.service_latency("stdin", passes=1)
    assert result["detections"] >= 6 and result["expected"] == 9  # the demo's words
    assert all(0 < x < 5 for x in result["latencies"])  # after the hand-over, not before it
    assert 0 < result["startup_to_ready_s"] < 60


def test_service_memory_and_install_size():
    assert 20 < bench.service_memory(2, seconds=1.0) < 1000
    size = bench.install_size_mb()
    assert {"streamrnn", "onnxruntime", "numpy", "pyzmq"} <= set(size["distributions"])
    assert "torch" not in size["distributions"] and size["mb"] > 10


@pytest.mark.slow
def test_bench_command_prints_every_figure():
    done = subprocess.run(
        STREAMRNN + ["bench", "--quick", "--json"], capture_output=True, text=True, cwd=ROOT, timeout=900
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["models"]["commands"]["rtf_single_stream"] > 0
    assert report["models"]["commands"]["streams_per_core"] > 0
    assert {"p50", "p95", "p99"} <= set(report["latency_ms"])
    assert {"1", "256"} <= set(report["rss_mb"])
    for name, entry in report["models"].items():  # each chunk length once (10, 20, 80 ms are one 80-ms frame)
        lengths = [c["chunk_ms"] for c in entry["chunks"]]
        assert len(lengths) == len(set(lengths)), (name, lengths)
    assert [c["chunk_ms"] for c in report["models"]["commands"]["chunks"]] == [80.0]
