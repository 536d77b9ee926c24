"""`streamrnn bench`: what the runtime and the service cost, measured the way users run them.

Each timing is repeated; reports give the median with the lowest and highest run. CPU time is
the process's (`time.process_time`), so it counts onnxruntime's threads too; onnxruntime runs
single-threaded as the service does by default. Torch-free, on contract files; the training
throughput needs the training extra and is skipped without it. The service's own figures
(latency, memory) come from streamrnn/dev/bench_service.py, taken first, in a child process.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Hashable
from importlib import metadata
from pathlib import Path

import numpy as np

from streamrnn.catalog import BUNDLED, resolve_model
from streamrnn.decision import Decider, Detection
from streamrnn.dev.bench_service import SERVICE_MODELS, recording
from streamrnn.runtime import StreamingModel

CHUNKS_MS = (10, 20, 80)
STREAM_COUNTS = (1, 4, 16, 64, 256, 1024)
HEADLINE_BATCHED = ("commands", "computer")  # the models whose streams per core --quick measures (64 per call)


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
    n = round(seconds * rate)
    if model.info.kind == "audio":
        return recording(rate, n)
    return np.random.default_rng(0).normal(size=(n, model.info.channels)).astype(np.float32)


# ----- one stream, one model ---------------------------------------------------------------


def one_pass(model: StreamingModel, pieces: list[np.ndarray]) -> tuple[float, np.ndarray, list[Detection]]:
    """One new stream fed `pieces` chunk by chunk, with decisions, as the service runs it: the
    CPU seconds it took, its scores and its detections."""
    model.add_stream(0)
    decider, scores, fired = Decider(model.info), [], []
    start = time.process_time()
    for piece in pieces:
        model.feed(0, piece)
        for rows in model.step().values():
            scores.append(rows)
            fired += decider.update(rows)
    cpu = time.process_time() - start
    model.remove_stream(0)
    return cpu, np.concatenate(scores), fired


def stream_cost(
    path: Path, chunk_frames: int | None, seconds: float, repeats: int, reference: Reference | None = None
) -> dict:
    """CPU seconds per second of input for one stream fed chunk by chunk, with decisions, as
    the service runs it. With a `reference` (Porcupine), each run of ours is followed by one of
    it on the same audio, so both see the same load, and their ratio is given run by run."""
    model = StreamingModel(path, threads=1, chunk_frames=chunk_frames)
    signal = _signal(model, seconds)
    pieces = [signal[i : i + model.chunk] for i in range(0, len(signal) - model.chunk + 1, model.chunk)]
    audio_seconds = len(pieces) * model.chunk / model.info.sample_rate
    runs, theirs = [], []
    for _ in range(repeats + 1):  # the first run warms up
        runs.append(one_pass(model, pieces)[0] / audio_seconds)
        if reference is not None:
            theirs.append(reference.run())
    result = {"chunk_ms": round(1000 * model.chunk / model.info.sample_rate, 1), "cpu_per_audio_s": spread(runs[1:])}
    if reference is not None:
        result["porcupine"] = spread(theirs[1:])
        result["ratio_to_porcupine"] = spread([ours / it for ours, it in zip(runs[1:], theirs[1:])], 3)
    return result


class Reference:
    """Porcupine 1.9.5 (the last release that runs offline without an access key), keyword
    `computer`, over the same recording: the yardstick of one stream's cost. Its frames are
    handed over as the lists its API takes, prepared before the clock starts."""

    VERSION = "1.9.5"

    def __init__(self, seconds: float):
        import pvporcupine

        self.engine = pvporcupine.create(keywords=["computer"])
        rate, length = self.engine.sample_rate, self.engine.frame_length
        pcm = np.clip(np.round(recording(rate, round(seconds * rate)) * 32767), -32768, 32767)
        self.frames = [pcm[i : i + length].astype(int).tolist() for i in range(0, len(pcm) - length + 1, length)]
        self.audio_seconds = len(self.frames) * length / rate

    @classmethod
    def open(cls, seconds: float) -> Reference | str:
        """The reference, or why it cannot run here."""
        try:
            version = metadata.version("pvporcupine")
        except metadata.PackageNotFoundError:
            return f"skipped: pvporcupine is not installed (pip install --no-deps pvporcupine=={cls.VERSION})"
        if version != cls.VERSION:
            return f"skipped: pvporcupine {version} needs an access key; {cls.VERSION} runs without one"
        return cls(seconds)

    def run(self) -> float:
        """CPU seconds per audio second of one pass."""
        start = time.process_time()
        for frame in self.frames:
            self.engine.process(frame)
        return (time.process_time() - start) / self.audio_seconds


# ----- many streams, batched ---------------------------------------------------------------


def batched_cost(path: Path, streams: int, seconds: float, repeats: int, device: str = "cpu") -> dict:
    """`streams` streams fed one chunk each per batched call, with a decider per stream:
    CPU seconds per stream-second of input, and the streams one core keeps at real time."""
    model = StreamingModel(path, device=device, threads=1)
    chunk, rate = model.chunk, model.info.sample_rate
    steps = max(3, int(seconds * rate / chunk))
    room = max(int(rate), streams)  # samples where a stream may start: a second, or one each
    signal = _signal(model, ((steps + 1) * chunk + room) / rate)
    offsets = stream_offsets(streams, room)
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


def stream_offsets(streams: int, room: int) -> np.ndarray:
    """Where each of `streams` streams starts reading, within the first `room` samples: as
    spread out as a stride of 997 (a prime) makes them, and all different where room allows."""
    return (np.arange(streams) * 997) % room


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


def run(service: dict, quick: bool = False, device: str = "cpu", log=print, gate: str | None = None) -> dict:
    """Every measurement, with the service's own figures (`service`, from bench_service.measure_apart,
    taken before this process loaded onnxruntime); `quick` gives every headline figure with fewer
    repeats, shorter runs and fewer stream counts (about 1 minute on 2 cores; the full run about 10).
    `gate`: a folder of real recordings to measure the gate on (streamrnn.dev.gate)."""
    repeats = 3 if quick else 5
    seconds = 5.0 if quick else 30.0
    reference = Reference.open(seconds)
    report: dict = {
        "machine": machine(),
        "quick": quick,
        "reference": f"pvporcupine {Reference.VERSION}" if isinstance(reference, Reference) else reference,
        "models": {},
    }
    for path in sorted(BUNDLED.glob("*.onnx")):
        probe = StreamingModel(path)
        name, info = probe.info.name, probe.info
        log(f"bench: {name}: one stream")
        chunks: list[int | None] = (  # in whole frames, each once: 10, 20 and 80 ms are one frame of an 80-ms model
            list(dict.fromkeys(max(1, round(ms / 1000 * info.sample_rate / info.frame_hop)) for ms in CHUNKS_MS))
            if info.kind == "audio"
            else [None]
        )
        default = chunks.index(info.chunk // info.frame_hop) if info.kind == "audio" else 0
        yardstick = reference if isinstance(reference, Reference) and info.kind == "audio" else None
        per_chunk = [
            stream_cost(path, c, seconds, repeats, yardstick if i == default else None) for i, c in enumerate(chunks)
        ]
        entry = {
            "kind": info.kind,
            "chunks": per_chunk,
            "load_s": model_load_s(path, repeats),
            "rtf_single_stream": per_chunk[default]["cpu_per_audio_s"]["median"],
        }
        if yardstick is not None:
            entry["ratio_to_porcupine"] = per_chunk[default]["ratio_to_porcupine"]["median"]
        if name in HEADLINE_BATCHED or not quick:
            counts = (64,) if quick else STREAM_COUNTS
            log(f"bench: {name}: batched streams {counts}")
            entry["batched"] = [batched_cost(path, n, 2.0 if quick else 10.0, repeats) for n in counts]
            entry["streams_per_core"] = max(b["streams_per_core"] for b in entry["batched"])
        report["models"][name] = entry
    if device == "cuda":
        report["gpu"] = gpu_streams(quick)
    report["latency_ms"], report["rss_mb"] = service["latency_ms"], service["rss_mb"]
    report["latency_ms"]["chunk_ms"] = 1000 * StreamingModel(resolve_model(SERVICE_MODELS[0])).chunk / 16000
    report["startup_to_ready_s"] = spread(service["startup_to_ready_s"], 3)
    report["install"] = install_size_mb()
    log("bench: training throughput")
    report["training"] = training_throughput(2 if quick else 5)
    if gate:
        from streamrnn.dev.gate import GATE, gate_study  # it times its passes with one_pass, from here

        report["gate"] = gate_study(gate, GATE, quick, log)
    return report


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
        if m["kind"] != "audio":
            continue
        if "ratio_to_porcupine" in m:
            rows.append(
                (
                    f"{name}: CPU per audio s, one stream, to Porcupine's in the same run",
                    "<= 0.25",
                    f"{m['ratio_to_porcupine']:.2f} ({m['rtf_single_stream']:.5f} s/s)",
                    m["ratio_to_porcupine"] <= 0.25,
                )
            )
        else:  # without the yardstick: a quarter of what Porcupine costs on the 2-core machine
            rows.append(
                (
                    f"{name}: CPU s per audio s, one stream, default chunk",
                    "<= 0.0013",
                    f"{m['rtf_single_stream']:.5f}",
                    m["rtf_single_stream"] <= 0.0013,
                )
            )
    if "streams_per_core" in report["models"].get("computer", {}):
        spc = report["models"]["computer"]["streams_per_core"]
        rows.append(("computer: streams per core at real time, batched", ">= 3000", str(spc), spc >= 3000))
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
    rows.append(("service resident memory, 1 stream", "<= 50 MB", f"{rss['1']} MB", rss["1"] <= 50))
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
    lines = [f"Machine: {report['machine']}", f"Reference: {report['reference']}", ""]
    lines += ["| target | goal | measured | met |", "|---|---|---|---|"]
    lines += [f"| {what} | {goal} | {got} | {'yes' if met else '**no**'} |" for what, goal, got, met in targets(report)]
    lines += [
        "",
        "| model | chunk | CPU s per audio s, one stream (median, min-max) | Porcupine, same runs | ratio "
        "| model load (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in report["models"].items():
        for c in m["chunks"]:
            cpu, theirs = c["cpu_per_audio_s"], c.get("porcupine")
            yardstick = (
                f"{theirs['median']:.5f} ({theirs['min']:.5f}-{theirs['max']:.5f}) | "
                f"{c['ratio_to_porcupine']['median']:.2f}"
                if theirs
                else " | "
            )
            lines.append(
                f"| {name} | {c['chunk_ms']:g} ms | {cpu['median']:.5f} ({cpu['min']:.5f}-{cpu['max']:.5f}) "
                f"| {yardstick} | {1000 * m['load_s']['median']:.1f} |"
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
    if "gate" in report:
        from streamrnn.dev.gate import gate_table

        lines += gate_table(report["gate"])
    return "\n".join(lines) + "\n"
