"""Per-stream decisions: per-frame scores -> detections (threshold, smoothing, patience, refractory)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .contract import ModelInfo


@dataclass(frozen=True)
class DecisionSettings:
    smoothing: int = 3       # frames in the moving average of each label's score
    patience: int = 2        # consecutive smoothed frames at or above threshold before firing
    refractory: float = 1.0  # seconds a label stays silent after it fired

    def __post_init__(self):
        if self.smoothing < 1 or self.patience < 1 or self.refractory < 0:
            raise ValueError(f"decision settings out of range: {self}")


@dataclass(frozen=True)
class Detection:
    label: str
    score: float  # smoothed score when it fired
    start: float  # stream seconds where the label's score first rose above half its threshold
    end: float    # stream seconds at the end of the frame that fired


class Decider:
    """Turns one stream's per-frame scores into detections; keeps its own small state.

    Only labels with a threshold are reported; the background label never is.
    """

    def __init__(self, info: ModelInfo, settings: DecisionSettings = DecisionSettings(),
                 thresholds: dict[str, float] | None = None):
        thresholds = {**info.thresholds, **(thresholds or {})}
        thresholds.pop(info.background_label, None)
        self._labels = [label for label in info.labels if label in thresholds]
        self._columns = np.array([info.labels.index(x) for x in self._labels], dtype=np.intp)
        self._threshold = np.array([thresholds[x] for x in self._labels], dtype=np.float32)
        self._frame_seconds = info.frame_seconds
        self._settings = settings
        self._refractory_frames = int(round(settings.refractory / info.frame_seconds))
        n = len(self._labels)
        self._history = np.zeros((settings.smoothing - 1, n), np.float32)
        self._run = np.zeros(n, np.int64)          # consecutive frames above threshold
        self._rise = np.full(n, -1, np.int64)      # frame where the score rose above half
        self._quiet_until = np.zeros(n, np.int64)  # refractory end, in frames
        self._frame = 0                            # stream frame index of the next score

    def update(self, scores: np.ndarray) -> list[Detection]:
        """Consume scores[frames, labels] that follow the previous call's in stream time."""
        if not len(self._labels):
            self._frame += len(scores)
            return []
        picked = scores[:, self._columns]
        window = np.concatenate([self._history, picked])
        k = self._settings.smoothing
        sums = np.cumsum(np.vstack([np.zeros((1, window.shape[1]), np.float32), window]), axis=0)
        smoothed = (sums[k:] - sums[:-k]) / k
        self._history = window[len(window) - (k - 1):] if k > 1 else self._history
        detections = []
        for t in range(len(picked)):
            frame = self._frame + t
            rising = picked[t] >= self._threshold / 2
            self._rise = np.where(rising, np.where(self._rise < 0, frame, self._rise), -1)
            self._run = np.where(smoothed[t] >= self._threshold, self._run + 1, 0)
            fire = (self._run == self._settings.patience) & (frame >= self._quiet_until)
            for j in np.flatnonzero(fire):
                start = self._rise[j] if self._rise[j] >= 0 else frame
                detections.append(Detection(self._labels[j], float(smoothed[t, j]),
                                            start * self._frame_seconds,
                                            (frame + 1) * self._frame_seconds))
                self._quiet_until[j] = frame + 1 + self._refractory_frames
        self._frame += len(picked)
        return detections
