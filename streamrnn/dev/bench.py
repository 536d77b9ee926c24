"""`streamrnn bench`: what the runtime and the service cost, measured the way users run them.

Each timing is repeated; reports give the median with the lowest and highest run. CPU time is
the process's (`time.process_time`), so it counts onnxruntime's threads too; onnxruntime runs
single-threaded as the service does by default. Torch-free, on contract files; the training
throughput needs the training extra and is skipped without it.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Hashable
from importlib import metadata
from pathlib import Path

import numpy as np
import soundfile
import zmq

from streamrnn.audio import read_audio
from streamrnn.catalog import BUNDLED, resolve_model
from streamrnn.client import Subscription
from streamrnn.decision import Decider
from streamrnn.dev.harness import ServeProcess
from streamrnn.pacing import Pacer
from streamrnn.runtime import StreamingModel
from streamrnn.send import messages
from streamrnn.wire import DetectionEvent

SAMPLE = Path(__file__).parents[1] / "samples" / "demo.flac"  # held-out speakers saying 9 keywords
CHUNKS_MS = (10, 20, 80)
STREAM_COUNTS = (1, 4, 16, 64, 256, 1024)
LATENCY_SOURCES = ("file", "stdin", "ingest")
SERVICE_MODELS = ("commands", "digits")
BLOCK = 0.01  # seconds per piece a producer hands the service (as a live input would)


def spread(values: list[float], digits: int = 6) -> dict:
    """Median, lowest and highest of repeated runs."""
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "runs": len(values),
    }


def _signal(model: StreamingModel, seconds: float) -> np.ndarray:
    """`seconds` of input for a model: the bundled recording (tiled) for audio; seeded noise
    for sensors, whose cost does not depend on the values."""
    rate = model.info.sample_rate
    n = int(seconds * rate)
    if model.info.kind == "audio":
        audio = read_audio(SAMPLE, rate)
        return np.resize(audio, n)
    return np.random.default_rng(0).normal(size=(n, model.info.channels)).astype(np.float32)


# ----- one stream, one model ---------------------------------------------------------------


def stream_cost(path: Path, chunk_frames: int | None, seconds: float, repeats: int) -> dict:
    """CPU seconds per second of input for one stream fed chunk by chunk, with decisions, as
    the service runs it."""
    model = StreamingModel(path, threads=1, chunk_frames=chunk_frames)
    signal = _signal(model, seconds)
    pieces = [signal[i : i + model.chunk] for i in range(0, len(signal) - model.chunk + 1, model.chunk)]
    audio_seconds = len(pieces) * model.chunk / model.info.sample_rate
    runs = []
    for _ in range(repeats + 1):  # the first run warms up
        model.add_stream(0)
        decider = Decider(model.info)
        start = time.process_time()
        for piece in pieces:
            model.feed(0, piece)
            for scores in model.step().values():
                decider.update(scores)
        runs.append((time.process_time() - start) / audio_seconds)
        model.remove_stream(0)
    return {"chunk_ms": round(1000 * model.chunk / model.info.sample_rate, 1), "cpu_per_audio_s": spread(runs[1:])}


# ----- many streams, batched ---------------------------------------------------------------


def batched_cost(path: Path, streams: int, seconds: float, repeats: int, device: str = "cpu") -> dict:
    """`streams` streams fed one chunk each per batched call, with a decider per stream:
    CPU seconds per stream-second of input, and the streams one core keeps at real time."""
    model = StreamingModel(path, device=device, threads=1)
    chunk = model.chunk
    signal = _signal(model, max(seconds, 2 * chunk / model.info.sample_rate) + 1)
    steps = max(3, int(seconds * model.info.sample_rate / chunk))
    offsets = (np.arange(streams) * 997) % (len(signal) - (steps + 1) * chunk)  # streams hear different parts
    for s in range(streams):
        model.add_stream(s)
    deciders: dict[Hashable, Decider] = {s: Decider(model.info) for s in range(streams)}
    cpu_runs, wall_runs = [], []
    stream_seconds = streams * steps * chunk / model.info.sample_rate
    for _ in range(repeats + 1):
        start, start_wall = time.process_time(), time.perf_counter()
        for k in range(steps):
            at = offsets + k * chunk
            for s in range(streams):
                model.feed(s, signal[at[s] : at[s] + chunk])
            for stream, scores in model.run().items():  # every stream: calls of at most max_batch streams
                deciders[stream].update(scores)
        cpu_runs.append((time.process_time() - start) / stream_seconds)
        wall_runs.append((time.perf_counter() - start_wall) / stream_seconds)
    cpu, wall = spread(cpu_runs[1:], 7), spread(wall_runs[1:], 7)
    return {
        "streams": streams,
        "cpu_per_stream_s": cpu,
        "wall_per_stream_s": wall,
        "streams_per_core": round(1 / cpu["median"]),
        "streams_at_real_time": round(1 / wall["median"]),
    }


# ----- the service ------------------------------------------------------------------------


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
    audio = np.resize(read_audio(SAMPLE, rate), int(seconds * rate))
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


# ----- sizes and start-up ------------------------------------------------------------------


def _requirements(dist: str) -> list[str]:
    names = []
    for requirement in metadata.requires(dist) or []:
        if "extra ==" in requirement:
            continue
        name = requirement.split(";")[0].strip()
        for stop in "<>=!~[ (":
            name = name.split(stop)[0]
        names.append(name)
    return names


def install_size_mb(root: str = "streamrnn") -> dict:
    """Installed size of the runtime: streamrnn and the closure of its required (not extra)
    dependencies, summed from each distribution's RECORD."""
    seen, todo, total = set(), [root], 0
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for f in dist.files or []:
            try:
                total += Path(f.locate()).stat().st_size
            except OSError:
                pass
        todo += _requirements(name)
    return {"mb": round(total / 2**20, 1), "distributions": sorted(seen)}


def model_load_s(path: Path, repeats: int) -> dict:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        StreamingModel(path)
        runs.append(time.perf_counter() - start)
    return spread(runs, 4)


def training_throughput(repeats: int) -> dict | None:
    """Training clips per second on this CPU (see streamrnn.training.throughput); None without
    the training extra."""
    try:
        from streamrnn.training.throughput import clips_per_second
    except ImportError:
        return None
    runs, threads = clips_per_second(repeats)
    return {"clips_per_s": spread(runs, 1), "torch_threads": threads}


# ----- the whole suite ---------------------------------------------------------------------


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown CPU",
    )
    import onnxruntime

    return f"{cpu}, {os.cpu_count()} cores; Python {sys.version.split()[0]}, onnxruntime {onnxruntime.__version__}"


def run(quick: bool = False, device: str = "cpu", log=print) -> dict:
    """Every measurement; `quick` trims repeats and sizes (a smoke run, not for reporting)."""
    repeats = 2 if quick else 5
    seconds = 5.0 if quick else 30.0
    report: dict = {"machine": machine(), "quick": quick, "models": {}}
    for path in sorted(BUNDLED.glob("*.onnx")):
        probe = StreamingModel(path)
        name, info = probe.info.name, probe.info
        log(f"bench: {name}: one stream")
        chunks = (  # in whole frames, each once: 10, 20 and 80 ms are all one frame of an 80-ms model
            list(dict.fromkeys(max(1, round(ms / 1000 * info.sample_rate / info.frame_hop)) for ms in CHUNKS_MS))
            if info.kind == "audio"
            else [None]
        )
        per_chunk = [stream_cost(path, c, seconds, repeats) for c in chunks]
        entry = {
            "kind": info.kind,
            "chunks": per_chunk,
            "load_s": model_load_s(path, repeats),
            "rtf_single_stream": next(
                (
                    c["cpu_per_audio_s"]["median"]
                    for c in per_chunk
                    if c["chunk_ms"] == 1000 * info.chunk / info.sample_rate
                ),
                per_chunk[-1]["cpu_per_audio_s"]["median"],
            ),
        }
        if name == "commands" or not quick:
            counts = (1, 16, 256) if quick else STREAM_COUNTS
            log(f"bench: {name}: batched streams {counts}")
            entry["batched"] = [batched_cost(path, n, 2.0 if quick else 10.0, repeats) for n in counts]
            entry["streams_per_core"] = max(b["streams_per_core"] for b in entry["batched"])
        report["models"][name] = entry
    if device == "cuda":
        report["gpu"] = gpu_streams(quick)
    log("bench: service latency")
    latency_runs = [service_latency(s, 1 if quick else 4) for s in LATENCY_SOURCES]
    chunk_ms = 1000 * StreamingModel(resolve_model("commands")).chunk / 16000
    report["latency_ms"] = _latency_summary(latency_runs, chunk_ms)
    report["startup_to_ready_s"] = spread([r["startup_to_ready_s"] for r in latency_runs], 3)
    log("bench: service memory")
    seconds_memory = 3.0 if quick else 10.0
    one, many = service_memory(1, seconds_memory), service_memory(256, seconds_memory)
    report["rss_mb"] = {"1": one, "256": many, "per_extra_stream_kb": round((many - one) * 1024 / 255, 1)}
    report["install"] = install_size_mb()
    log("bench: training throughput")
    report["training"] = training_throughput(2 if quick else 5)
    return report


def _latency_summary(runs: list[dict], chunk_ms: float) -> dict:
    everything = [x for r in runs for x in r["latencies"]]
    if not everything:
        return {"chunk_ms": chunk_ms, "detections": 0}
    ms = lambda xs, q: round(1000 * float(np.percentile(xs, q)), 1)  # noqa: E731
    out = {
        "chunk_ms": chunk_ms,
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


def gpu_streams(quick: bool) -> dict:
    """Batched `commands` streams on onnxruntime's CUDA provider; skipped where there is none."""
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return {"skipped": "onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu on a machine with a GPU)"}
    counts = (16, 256) if quick else (64, 256, 1024, 4096)
    return {"batched": [batched_cost(resolve_model("commands"), n, 2.0, 2 if quick else 3, "cuda") for n in counts]}


def targets(report: dict) -> list[tuple[str, str, str, bool]]:
    """(what, target, measured, met) for each target of the project (one core of a 2-core AVX2
    machine; see BENCHMARKS.md)."""
    rows = []
    for name, m in report["models"].items():
        if m["kind"] == "audio":
            rows.append(
                (
                    f"{name}: CPU s per audio s, one stream, default chunk",
                    "<= 0.002",
                    f"{m['rtf_single_stream']:.5f}",
                    m["rtf_single_stream"] <= 0.002,
                )
            )
    if "streams_per_core" in report["models"].get("commands", {}):
        spc = report["models"]["commands"]["streams_per_core"]
        rows.append(("commands: streams per core at real time, batched", ">= 1000", str(spc), spc >= 1000))
    lat = report["latency_ms"]
    if "p95" in lat:
        rows.append(
            (
                "latency p95, input to subscriber",
                f"<= chunk + 30 = {lat['chunk_ms'] + 30:g} ms",
                f"{lat['p95']} ms",
                lat["p95"] <= lat["chunk_ms"] + 30,
            )
        )
    rss = report["rss_mb"]
    rows.append(("service resident memory, 1 stream", "<= 60 MB", f"{rss['1']} MB", rss["1"] <= 60))
    rows.append(
        (
            "resident memory per extra stream (256 streams)",
            "<= 100 KB",
            f"{rss['per_extra_stream_kb']} KB",
            rss["per_extra_stream_kb"] <= 100,
        )
    )
    rows.append(("runtime install", "<= 200 MB", f"{report['install']['mb']} MB", report["install"]["mb"] <= 200))
    return rows


def table(report: dict) -> str:
    """The report as Markdown tables, targets first."""
    lines = [f"Machine: {report['machine']}", "", "| target | goal | measured | met |", "|---|---|---|---|"]
    lines += [f"| {what} | {goal} | {got} | {'yes' if met else '**no**'} |" for what, goal, got, met in targets(report)]
    lines += [
        "",
        "| model | chunk | CPU s per audio s, one stream (median, min-max) | model load (ms) |",
        "|---|---|---|---|",
    ]
    for name, m in report["models"].items():
        for c in m["chunks"]:
            cpu = c["cpu_per_audio_s"]
            lines.append(
                f"| {name} | {c['chunk_ms']:g} ms | {cpu['median']:.5f} ({cpu['min']:.5f}-{cpu['max']:.5f}) "
                f"| {1000 * m['load_s']['median']:.1f} |"
            )
    lines += [
        "",
        "| model | streams in one call | CPU s per stream-second (median) | streams per core at real time |",
        "|---|---|---|---|",
    ]
    for name, m in report["models"].items():
        for b in m.get("batched", []):
            lines.append(
                f"| {name} | {b['streams']} | {b['cpu_per_stream_s']['median']:.6f} | {b['streams_per_core']} |"
            )
    lat = report["latency_ms"]
    lines += [
        "",
        f"Service latency, input to subscriber (chunk {lat['chunk_ms']:g} ms, {lat['detections']} of "
        f"{lat.get('expected', '?')} detections): p50 {lat.get('p50')} ms, p95 {lat.get('p95')} ms, "
        f"p99 {lat.get('p99')} ms",
    ]
    for source, s in lat.get("by_source", {}).items():
        lines.append(f"- {source}: p50 {s['p50']} ms, p95 {s['p95']} ms ({s['detections']} detections)")
    rss, startup = report["rss_mb"], report["startup_to_ready_s"]
    lines += [
        "",
        f"Service resident memory: {rss['1']} MB with 1 stream, {rss['256']} MB with 256 "
        f"({rss['per_extra_stream_kb']} KB per extra stream)",
        f"Start-up to READY: {startup['median']} s (median of {startup['runs']})",
        f"Runtime install: {report['install']['mb']} MB ({', '.join(report['install']['distributions'])})",
    ]
    t = report["training"]
    lines.append(
        "Training throughput: "
        + (
            f"{t['clips_per_s']['median']} clips/s ({t['torch_threads']} torch threads)"
            if t
            else "skipped (needs the training extra)"
        )
    )
    if "gpu" in report:
        g = report["gpu"]
        lines.append(
            "GPU: "
            + (
                g["skipped"]
                if "skipped" in g
                else ", ".join(
                    f"{b['streams']} streams in one call: {b['streams_at_real_time']} streams at real time"
                    for b in g["batched"]
                )
            )
        )
    return "\n".join(lines) + "\n"
