"""What the gate (streamrnn.runtime.Gate) saves and changes on real recordings: `streamrnn bench
--gate FOLDER`. Each bundled audio model serves one stream of the folder's recordings joined end
to end in file order, with and without the gate, alternating in one process so both see the
same load: CPU seconds per audio second (with decisions, as the service runs them), the share
of frames not run, how far any frame's scores moved, and the detections each way."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from streamrnn.catalog import BUNDLED
from streamrnn.dev.bench import one_pass
from streamrnn.evaluation.detection import read_negatives
from streamrnn.runtime import Gate, StreamingModel

GATE = Gate(-50.0, 0.5)  # the setting measured (training/log/2026-12-07-cost.md) and suggested for wake words


def gate_effect(path: Path, folder: str | Path, gate: Gate, minutes: float, repeats: int) -> dict:
    """One model, gated and not, over the folder's recordings (see the module's docstring)."""
    plain, gated = StreamingModel(path), StreamingModel(path, gate=gate)
    audio = read_negatives([str(folder)], plain.info.sample_rate, minutes).streams[0]  # its first minutes
    pieces = [audio[i : i + plain.chunk] for i in range(0, len(audio) - plain.chunk + 1, plain.chunk)]
    seconds = len(pieces) * plain.chunk / plain.info.sample_rate
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    for run in range(repeats + 1):  # the first run warms up
        gated.gated_frames = 0
        for key, model in (("off", plain), ("on", gated)):
            spent, scores, detections = one_pass(model, pieces)
            fired = [(d.label, round(d.end, 2)) for d in detections]
            if run:
                cpu[key].append(spent / seconds)
            if key == "off":
                reference, fired_plain = scores, fired
    off, on = float(np.median(cpu["off"])), float(np.median(cpu["on"]))
    return {
        "audio_minutes": round(seconds / 60, 1),
        "cpu_per_audio_s": {"off": round(off, 6), "on": round(on, 6)},
        "cpu_saved": round(1 - on / off, 3),
        "frames_skipped": round(gated.gated_frames / len(scores), 3),
        "max_score_change": float(f"{np.abs(scores - reference).max():.2g}"),
        "detections": {"off": len(fired_plain), "on": len(fired), "changed": len(set(fired_plain) ^ set(fired))},
    }


def gate_study(folder: str | Path, gate: Gate, quick: bool, log=print) -> dict:
    """`gate_effect` of every bundled audio model: {"gate", "folder", "models": {name: effect}}."""
    models = {}
    for path in sorted(BUNDLED.glob("*.onnx")):
        if StreamingModel(path).info.kind == "audio":
            log(f"bench: {path.stem}: gated and not, on {folder}")
            models[path.stem] = gate_effect(path, folder, gate, 5.0 if quick else 30.0, 2 if quick else 3)
    return {"gate": {"level_dbfs": gate.level_dbfs, "settle_s": gate.settle}, "folder": str(folder), "models": models}


def gate_table(study: dict) -> list[str]:
    """The study as Markdown lines for the bench's report."""
    g = study["gate"]
    lines = [
        "",
        f"Gate at {g['level_dbfs']:g} dBFS after {g['settle_s']:g} s of quiet, one stream over {study['folder']}:",
        "",
        "| model | minutes | CPU s per audio s, off / on | CPU saved | frames skipped | largest score change "
        "| detections off / on (changed) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in study["models"].items():
        cpu, d = m["cpu_per_audio_s"], m["detections"]
        lines.append(
            f"| {name} | {m['audio_minutes']:g} | {cpu['off']:.5f} / {cpu['on']:.5f} | {m['cpu_saved']:.1%} "
            f"| {m['frames_skipped']:.1%} | {m['max_score_change']:g} | {d['off']} / {d['on']} ({d['changed']}) |"
        )
    return lines
