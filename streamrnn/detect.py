"""Offline recognition of audio files through the service's streaming path, batched across files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from streamrnn.audio import read_audio
from streamrnn.decision import Decider, DecisionSettings
from streamrnn.runtime import StreamingModel
from streamrnn.wire import DetectionEvent


def score_files(model: StreamingModel, files: list[str | Path]) -> dict[str, np.ndarray]:
    """Per-frame scores [frames, labels] of each audio file, all files run as batched streams."""
    signals = [read_audio(f, model.info.sample_rate) for f in files]
    return dict(zip(map(str, files), model.score(signals)))


def detect_files(
    model: StreamingModel,
    files: list[str | Path],
    settings: DecisionSettings = DecisionSettings(),
    thresholds: dict[str, float] | None = None,
) -> Iterator[DetectionEvent]:
    """Unstamped detection events, file by file in stream-time order."""
    for stream, scores in score_files(model, files).items():
        decider = Decider(model.info, settings, thresholds)
        for detection in decider.update(scores):
            yield DetectionEvent.of(stream, model.info, detection)
