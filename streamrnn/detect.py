"""Offline recognition of audio files and sensor CSVs through the service's streaming path,
batched across files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from streamrnn.audio import AudioError, read_audio, to_model_rate
from streamrnn.decision import Decider, DecisionSettings
from streamrnn.runtime import StreamingModel
from streamrnn.sensors import read_csv
from streamrnn.wire import DetectionEvent


def read_input(model: StreamingModel, path: str | Path, rate: float | None = None) -> np.ndarray:
    """A file as the model takes it: audio (wav, flac, ogg) as mono at its rate, or a sensor CSV
    (a row per time step at `rate` Hz, default the model's) with the model's channels."""
    info, path = model.info, Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    is_csv = path.suffix.lower() == ".csv"
    if info.kind == "audio":
        if is_csv:
            raise AudioError(f"{path}: a sensor CSV, but model {info.name} takes audio")
        return read_audio(path, info.sample_rate)
    if not is_csv:
        raise AudioError(f"{path}: model {info.name} takes sensor frames as CSV (a row per time step)")
    frames = read_csv(path)
    if frames.shape[1] != info.channels:
        raise AudioError(f"{path}: {frames.shape[1]} columns, but model {info.name} takes {info.channels} channels")
    return to_model_rate(frames, rate or info.sample_rate, info.sample_rate)


def route(models: list[StreamingModel], files: list[str | Path]) -> list[list[str | Path]]:
    """Each model's files, routed as the service routes streams: audio files to the audio models,
    sensor CSVs to the sensor models with as many channels as the file has columns. With one
    model every file is its own (and read_input says what does not fit); with several, a file no
    model takes is an error naming it."""
    if len(models) == 1:
        return [list(files)]
    takes = []
    for f in files:
        if Path(f).suffix.lower() == ".csv" and Path(f).is_file():
            channels = read_csv(Path(f)).shape[1]
            takes.append([m.info.kind == "sensor" and m.info.channels == channels for m in models])
        else:
            takes.append([m.info.kind == "audio" for m in models])
    for f, fits in zip(files, takes):
        if not any(fits):
            raise AudioError(f"{f}: none of the models {', '.join(m.info.name for m in models)} takes it")
    return [[f for f, fits in zip(files, takes) if fits[i]] for i in range(len(models))]


def score_files(model: StreamingModel, files: list[str | Path], rate: float | None = None) -> dict[str, np.ndarray]:
    """Per-frame scores [frames, labels] of each file, all files run as batched streams."""
    signals = [read_input(model, f, rate) for f in files]
    return dict(zip(map(str, files), model.score(signals)))


def detect_files(
    model: StreamingModel,
    files: list[str | Path],
    settings: DecisionSettings = DecisionSettings(),
    thresholds: dict[str, float] | None = None,
    rate: float | None = None,
) -> Iterator[DetectionEvent]:
    """Unstamped detection events, file by file in stream-time order."""
    for stream, scores in score_files(model, files, rate).items():
        decider = Decider(model.info, settings, thresholds)
        for detection in decider.update(scores):
            yield DetectionEvent.of(stream, model.info, detection)
