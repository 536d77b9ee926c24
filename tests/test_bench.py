"""The benchmark suite's parts measure what they say (smoke runs; no speed is asserted here)."""

from __future__ import annotations

import json
import subprocess
import warnings

import pytest

from conftest import ROOT, STREAMRNN
from streamrnn.dev import bench, bench_service, gate
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


def test_batched_streams_of_sensor_models_read_different_parts():
    """Sensor models run at 10-25 Hz: the offsets once divided by zero (motions, 10 s) or fell
    before the signal (2 s), and 1,024 wand streams shared 20 starts."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for seconds in (2.0, 10.0):
            assert bench.batched_cost(ROOT / "streamrnn/models/motions.onnx", 16, seconds, 1)["streams_per_core"] > 16
    assert len(set(bench.stream_offsets(1024, max(25, 1024)))) == 1024


def test_one_stream_beside_porcupine_in_the_same_runs():
    reference = bench.Reference.open(1.0)
    if isinstance(reference, str):
        pytest.skip(reference)
    result = bench.stream_cost(COMMANDS, None, seconds=1.0, repeats=2, reference=reference)
    ratio, theirs = result["ratio_to_porcupine"], result["porcupine"]
    assert theirs["runs"] == ratio["runs"] == 2 and 0 < theirs["min"] <= theirs["max"] < 1
    assert 0 < ratio["min"] <= ratio["median"] <= ratio["max"] < 10


def test_service_latency_counts_from_hand_over_to_subscriber():
    result = bench_service.service_latency("stdin", passes=1)
    assert result["detections"] >= 6 and result["expected"] == 9  # the demo's words
    assert all(0 < x < 5 for x in result["latencies"])  # after the hand-over, not before it
    assert 0 < result["startup_to_ready_s"] < 60


def test_the_service_is_not_measured_beside_onnxruntime():
    """A process holding onnxruntime keeps its pages resident in the service: refused, saying why."""
    import onnxruntime  # noqa: F401  (pytest has loaded it already; the import says so here)

    with pytest.raises(RuntimeError, match="before this process loads onnxruntime"):
        bench_service.measure_apart(quick=True)


def test_service_memory_and_install_size():
    assert 20 < bench_service.service_memory(2, seconds=1.0) < 1000
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
    assert report["models"]["computer"]["streams_per_core"] > 0
    if report["reference"].startswith("pvporcupine"):  # every speech model beside Porcupine
        assert all(0 < m["ratio_to_porcupine"] < 10 for m in report["models"].values() if m["kind"] == "audio")
    assert {"p50", "p95", "p99"} <= set(report["latency_ms"])
    assert {"1", "256"} <= set(report["rss_mb"])
    for name, entry in report["models"].items():  # each chunk length once (10, 20, 80 ms are one 80-ms frame)
        lengths = [c["chunk_ms"] for c in entry["chunks"]]
        assert len(lengths) == len(set(lengths)), (name, lengths)
    assert [c["chunk_ms"] for c in report["models"]["commands"]["chunks"]] == [80.0]


def test_the_gate_is_measured_with_and_without_on_the_same_recordings():
    effect = gate.gate_effect(ROOT / "streamrnn/models/computer.onnx", ROOT / "streamrnn/samples", gate.GATE, 1.0, 1)
    cpu, fired = effect["cpu_per_audio_s"], effect["detections"]
    assert 0 < cpu["on"] < 1 and 0 < cpu["off"] < 1 and 0.2 < effect["frames_skipped"] < 1  # the samples hold silence
    assert 0 < effect["max_score_change"] < 0.05 and fired["off"] == fired["on"] >= 1 and fired["changed"] == 0
    study = {"gate": {"level_dbfs": -50.0, "settle_s": 0.5}, "folder": "samples", "models": {"computer": effect}}
    assert "| computer | " in "\n".join(gate.gate_table(study))
