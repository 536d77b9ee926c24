"""The service's figures for `streamrnn bench`: latency from input to subscriber and resident
memory, measured through real sockets to a real `streamrnn serve`.

`streamrnn bench` runs this module in a child process (`python -m streamrnn.dev.bench_service`)
that loads no onnxruntime: a process holding the library shares its pages with the service, which
keeps them resident there (about 15 MB), where a service running alone hands back those it does
not use (streamrnn/service/memory.py).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile
import zmq

from streamrnn.audio import read_audio
from streamrnn.client import Subscription
from streamrnn.dev.harness import ServeProcess
from streamrnn.pacing import Pacer
from streamrnn.send import messages
from streamrnn.wire import DetectionEvent

SAMPLE = Path(__file__).parents[1] / "samples" / "demo.flac"  # held-out speakers saying 9 keywords
LATENCY_SOURCES = ("file", "stdin", "ingest")
SERVICE_MODELS = ("commands", "digits")
BLOCK = 0.01  # seconds per piece a producer hands the service (as a live input would)


def recording(rate: float, samples: int) -> np.ndarray:
    """The bundled recording at `rate`, tiled to `samples`."""
    return np.resize(read_audio(SAMPLE, rate), samples)


def _ipc(folder: str, name: str) -> str:
    return f"ipc://{folder}/{name}"


def _serve(folder: str, args: list[str], stdin=None) -> tuple[ServeProcess, float]:
    """A service started and READY: (the process, wall time of READY)."""
    service = ServeProcess(folder, ["--log-level", "warning", *args], stdin=stdin)
    try:
        return service, service.wait_notice("READY=1")
    except RuntimeError:
        service.close()
        raise


class _Collector:
    """A subscriber thread that keeps (arrival wall time, event) of each detection."""

    def __init__(self, address: str):
        self.subscription = Subscription(address, topics=("detection",))
        self.received: list[tuple[float, DetectionEvent]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if isinstance(event := self.subscription.receive(timeout=0.05), DetectionEvent):
                self.received.append((time.time(), event))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.subscription.close()


def service_latency(source: str, passes: int) -> dict:
    """Seconds from the moment the sample that completes a detection's last frame is handed to
    the service to the moment a subscriber holds the detection, with the `commands` and
    `digits` models on the bundled recording (`passes` times, 2 s of silence first)."""
    rate = 16000
    audio = np.concatenate([np.zeros(2 * rate, np.float32)] + [read_audio(SAMPLE, rate)] * passes)
    block = int(BLOCK * rate)
    handed: list[float] = []  # wall time each block was handed over
    with tempfile.TemporaryDirectory(prefix="streamrnn-bench-") as folder:
        events = _ipc(folder, "events")
        collector = _Collector(events)
        args = ["--publish", events] + [a for m in SERVICE_MODELS for a in ("--model", m)]
        if source == "file":
            soundfile.write(f"{folder}/audio.wav", audio, rate, subtype="PCM_16")
            service, ready = _serve(folder, args + ["--source", f"{folder}/audio.wav"])
            # the file source starts its clock right after READY and hands over block by block
            handed = [ready + (i + 1) * BLOCK for i in range(-(-len(audio) // block))]
            time.sleep(max(0.0, handed[-1] - time.time()))
        elif source == "stdin":
            service, ready = _serve(folder, args + ["--source", "-", "--stdin-rate", str(rate)], stdin=subprocess.PIPE)
            pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
            pipe = service.process.stdin
            assert pipe is not None  # opened with stdin=PIPE
            pacer = Pacer()
            for i in range(0, len(pcm), block):
                pacer.wait(len(pcm[i : i + block]) / rate)
                pipe.write(pcm[i : i + block].tobytes())
                pipe.flush()
                handed.append(time.time())
            pipe.close()
        else:
            ingest = _ipc(folder, "ingest")
            service, ready = _serve(folder, args + ["--source", f"pull:{ingest}"])
            push: zmq.Socket = zmq.Context.instance().socket(zmq.PUSH)
            push.connect(ingest)
            pacer = Pacer()
            for parts, seconds in messages("bench", audio, rate, "audio", BLOCK):
                pacer.wait(seconds)
                push.send_multipart(parts)
                handed.append(time.time())
            push.close(linger=1000)
        time.sleep(1.0)
        service.stop()
        service.close()
        collector.close()
    latencies = [
        arrived - handed[min(len(handed) - 1, max(0, round(e.end * rate) - 1) // block)]
        for arrived, e in collector.received
    ]
    return {
        "source": source,
        "detections": len(latencies),
        "expected": 9 * passes,
        "startup_to_ready_s": round(ready - service.spawned, 3),
        "latencies": latencies,
    }


def service_memory(streams: int, seconds: float) -> float:
    """Resident MB of the service serving `commands` to `streams` ingest streams after `seconds`
    of real-time input on each."""
    rate = 16000
    audio = recording(rate, int(seconds * rate))
    step = 0.08
    with tempfile.TemporaryDirectory(prefix="streamrnn-bench-") as folder:
        ingest = _ipc(folder, "ingest")
        service, _ = _serve(
            folder, ["--publish", _ipc(folder, "events"), "--model", "commands", "--source", f"pull:{ingest}"]
        )
        push: zmq.Socket = zmq.Context.instance().socket(zmq.PUSH)
        push.connect(ingest)
        senders = [messages(f"s{s}", audio, rate, "audio", step) for s in range(streams)]
        pacer = Pacer()
        for _ in range(int(seconds / step)):
            for sender in senders:
                push.send_multipart(next(sender)[0])
            pacer.wait(step)
        time.sleep(0.5)
        rss = service.rss_mb()
        push.close(linger=0)
        service.stop()
        service.close()
    return round(rss, 1)


def _latency_summary(runs: list[dict]) -> dict:
    everything = [x for r in runs for x in r["latencies"]]
    if not everything:
        return {"detections": 0}
    ms = lambda xs, q: round(1000 * float(np.percentile(xs, q)), 1)  # noqa: E731
    out = {
        "p50": ms(everything, 50),
        "p95": ms(everything, 95),
        "p99": ms(everything, 99),
        "detections": len(everything),
        "expected": sum(r["expected"] for r in runs),
    }
    out["by_source"] = {
        r["source"]: {"p50": ms(r["latencies"], 50), "p95": ms(r["latencies"], 95), "detections": r["detections"]}
        for r in runs
        if r["latencies"]
    }
    return out


def measure(quick: bool) -> dict:
    """Latency (each source) and resident memory (1 and 256 streams)."""
    runs = [service_latency(s, 1 if quick else 4) for s in LATENCY_SOURCES]
    seconds = 3.0 if quick else 10.0
    one, many = service_memory(1, seconds), service_memory(256, seconds)
    startups = [r["startup_to_ready_s"] for r in runs]
    return {
        "latency_ms": _latency_summary(runs),
        "startup_to_ready_s": startups,
        "rss_mb": {"1": one, "256": many, "per_extra_stream_kb": round((many - one) * 1024 / 255, 1)},
    }


def measure_apart(quick: bool) -> dict:
    """`measure` in a child process that loads no onnxruntime (see the module's docstring); call it
    before this process loads onnxruntime, for the same reason."""
    if "onnxruntime" in sys.modules:
        raise RuntimeError("measure the service before this process loads onnxruntime: it would share its pages")
    done = subprocess.run(
        [sys.executable, "-m", "streamrnn.dev.bench_service", *(["--quick"] if quick else [])],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise RuntimeError(f"bench_service failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    print(json.dumps(measure(parser.parse_args().quick)))
