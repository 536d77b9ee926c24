"""Per-stream decisions: per-frame scores -> detections (threshold, smoothing, patience, refractory)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .contract import ModelInfo


NEVER = np.iinfo(np.int64).min


@dataclass(frozen=True)
class DecisionSettings:
    smoothing: int = 0       # frames in the moving average of each label's score; 0: the model's own
    patience: int = 0        # consecutive smoothed frames at or above threshold before firing; 0: the model's
    refractory: float = 1.0  # seconds a label stays silent after it fired

    def __post_init__(self):
        if self.smoothing < 0 or self.patience < 0 or self.refractory < 0:
            raise ValueError(f"decision settings out of range: {self}")


@dataclass(frozen=True)
class Detection:
    label: str
    score: float  # smoothed score when it fired
    start: float  # stream seconds where the label's score first rose above half its threshold
    end: float    # stream seconds at the end of the frame that fired


class Decider:
    """Turns one stream's per-frame scores into detections; keeps its own small state.

    Only labels with a threshold are reported; the background label never is. Smoothing and
    patience left at 0 are the model's own (its contract file's, chosen for its frame length).
    """

    def __init__(self, info: ModelInfo, settings: DecisionSettings = DecisionSettings(),
                 thresholds: dict[str, float] | None = None):
        thresholds = {**info.thresholds, **(thresholds or {})}
        thresholds.pop(info.background_label, None)
        self._labels = [label for label in info.labels if label in thresholds]
        self._columns = np.array([info.labels.index(x) for x in self._labels], dtype=np.intp)
        self._threshold = np.array([thresholds[x] for x in self._labels], dtype=np.float32)
        self._frame_seconds = info.frame_seconds
        self._smoothing = settings.smoothing or info.smoothing
        self._patience = settings.patience or info.patience
        self._refractory_frames = int(round(settings.refractory / info.frame_seconds))
        n = len(self._labels)
        self._history = np.zeros((self._smoothing - 1, n), np.float32)
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
        k = self._smoothing
        self._history = window[len(window) - (k - 1):] if k > 1 else self._history
        if not (window >= self._threshold / 2).any():  # the usual chunk: nothing near any threshold
            self._run[:] = 0
            self._rise[:] = -1
            self._frame += len(picked)
            return []
        # each frame's mean over its own window, summed in one fixed order: the same numbers
        # however the stream is cut into chunks
        smoothed = window[:len(picked)].copy()
        for i in range(1, k):
            smoothed += window[i:i + len(picked)]
        smoothed /= k
        frames = np.arange(self._frame, self._frame + len(picked))[:, None]
        # runs of frames at/above threshold: frame minus the last frame below (carried over chunks)
        below = _last_true(~(smoothed >= self._threshold), frames, self._frame - 1 - self._run)
        run = frames - below
        # where the current rise above half the threshold began (-1: not risen)
        rising = picked >= self._threshold / 2
        not_rising = _last_true(~rising, frames, np.where(self._rise >= 0, self._rise - 1, self._frame - 1))
        rise = np.where(rising, not_rising + 1, -1)
        detections = []
        for t, j in zip(*np.nonzero(run == self._patience)):  # time order; few
            frame = self._frame + t
            if frame < self._quiet_until[j]:
                continue
            start = rise[t, j] if rise[t, j] >= 0 else frame
            detections.append(Detection(self._labels[j], float(smoothed[t, j]),
                                        start * self._frame_seconds, (frame + 1) * self._frame_seconds))
            self._quiet_until[j] = frame + 1 + self._refractory_frames
        self._run, self._rise = run[-1], rise[-1]
        self._frame += len(picked)
        return detections


def _last_true(mask: np.ndarray, frames: np.ndarray, before: np.ndarray) -> np.ndarray:
    """For each frame and label, the latest frame (up to it) where `mask` holds, else `before`."""
    marks = np.where(mask, frames, NEVER)
    return np.maximum.accumulate(np.vstack([before[None, :], marks]), axis=0)[1:]
