"""Offline recognition of audio files through the service's streaming path, batched across files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .audio import read_audio
from .decision import Decider, DecisionSettings
from .events import detection_event
from .runtime import StreamingModel


def flush(model: StreamingModel, stream_id) -> None:
    """Pad a stream's last partial chunk with silence so its tail is scored too."""
    left = model.pending(stream_id) % model.info.chunk
    if left:
        shape = (model.info.chunk - left, *(() if model.info.kind == "audio" else (model.info.channels,)))
        model.feed(stream_id, np.zeros(shape, np.float32))


def score_files(model: StreamingModel, files: list[str | Path]) -> dict[str, np.ndarray]:
    """Per-frame scores [frames, labels] of each audio file, all files run as batched streams."""
    for f in files:
        model.add_stream(str(f))
        model.feed(str(f), read_audio(f, model.info.sample_rate))
        flush(model, str(f))
    scores = model.run()
    for f in files:
        model.remove_stream(str(f))
    return {str(f): scores.get(str(f), np.zeros((0, len(model.info.labels)), np.float32)) for f in files}


def detect_files(model: StreamingModel, files: list[str | Path],
                 settings: DecisionSettings = DecisionSettings(),
                 thresholds: dict[str, float] | None = None) -> Iterator[dict]:
    """Unstamped detection events, file by file in stream-time order."""
    for stream, scores in score_files(model, files).items():
        decider = Decider(model.info, settings, thresholds)
        for detection in decider.update(scores):
            yield detection_event(stream, model.info, detection)
