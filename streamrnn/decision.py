"""Per-stream decisions: per-frame scores -> detections (threshold, smoothing, patience, refractory)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from streamrnn.contract import ModelInfo

RISE = 0.5  # a label's score "rises" at this share of its threshold: where a detection starts, where a near miss begins


@dataclass(frozen=True)
class DecisionSettings:
    smoothing: int = 0  # frames in the moving average of each label's score; 0: the model's own
    patience: int = 0  # consecutive smoothed frames at or above threshold before firing; 0: the model's
    refractory: float = 1.0  # seconds a label stays silent after it fired

    def __post_init__(self):
        if self.smoothing < 0 or self.patience < 0 or self.refractory < 0:
            raise ValueError(f"decision settings out of range: {self}")


@dataclass(frozen=True)
class Detection:
    label: str
    score: float  # smoothed score when it fired
    start: float  # stream seconds where the label's score first rose to RISE (half) of its threshold
    end: float  # stream seconds at the end of the frame that fired


class Decider:
    """Turns one stream's per-frame scores into detections; keeps its own small state.

    Only labels with a threshold are reported; the background label never is. Smoothing and
    patience left at 0 are the model's own (its contract file's, chosen for its frame length).
    `start` is the stream time (seconds) where its first frame begins: a decider that joins a
    running stream (a model added or changed on reload) keeps the stream's clock.
    With `near_misses`, a label's score that rose to RISE of its threshold and fell back without
    firing is kept in `self.near_misses` (its peak as the score) for the caller to take.
    """

    def __init__(
        self,
        info: ModelInfo,
        settings: DecisionSettings = DecisionSettings(),
        thresholds: dict[str, float] | None = None,
        start: float = 0.0,
        near_misses: bool = False,
    ):
        thresholds = {**info.thresholds, **(thresholds or {})}
        thresholds.pop(info.background_label, None)
        self._labels = [label for label in info.labels if label in thresholds]
        self._columns = [info.labels.index(x) for x in self._labels]
        self._frame_seconds = info.frame_seconds
        self._smoothing = settings.smoothing or info.smoothing
        self._patience = settings.patience or info.patience
        self._refractory_frames = int(round(settings.refractory / info.frame_seconds))
        n = len(self._labels)
        # thresholds and their rise levels (RISE of each) as the float32 numbers the scores are
        # compared with; a rise level per model column, inf where unreported
        threshold = np.array([thresholds[x] for x in self._labels], np.float32)
        self._threshold: list[float] = threshold.tolist()
        self._rise_at: list[float] = (threshold * np.float32(RISE)).tolist()
        self._rise_by_column = [math.inf] * len(info.labels)
        for column, level in zip(self._columns, self._rise_at):
            self._rise_by_column[column] = level
        self._at_rest = True  # history below every rise level, no run, no rise
        self._history = [[0.0] * len(info.labels)] * (self._smoothing - 1)  # the last rows of scores
        self._run = [0] * n  # consecutive smoothed frames at or above threshold
        self._rise = [-1] * n  # frame where the score reached its rise level (-1: not risen)
        self._quiet_until = [0] * n  # refractory end, in frames
        self._frame = 0  # frame index of the next score
        self._start = start
        self._keep_near_misses = near_misses
        self._peak = [0.0] * n  # highest score since the rise
        self._fired = [False] * n  # whether the label fired since the rise
        self.near_misses: list[Detection] = []

    @property
    def position(self) -> float:
        """Stream seconds at the end of the frames decided so far."""
        return self._start + self._frame * self._frame_seconds

    def update(self, scores: np.ndarray) -> list[Detection]:
        """Consume scores[frames, labels] that follow the previous call's in stream time.

        Plain Python on the rows: a chunk holds a frame or a few, and right after a model call
        numpy's first operations cost several times more than these loops (the call has evicted
        them from the CPU's caches)."""
        rows, k = scores.tolist(), self._smoothing
        window = self._history + rows
        self._history = window[len(window) - (k - 1) :] if k > 1 else []
        if self._at_rest and not any(v >= h for row in rows for v, h in zip(row, self._rise_by_column)):
            self._frame += len(rows)  # the usual chunk: nothing near any threshold
            return []
        fired = []
        for j, column in enumerate(self._columns):
            run, rise, level, threshold = self._run[j], self._rise[j], self._rise_at[j], self._threshold[j]
            values = [row[column] for row in window]
            if not run and rise < 0 and max(values) < level:
                continue  # nothing going on for this label: it stays at rest
            for t, value in enumerate(values[k - 1 :]):
                frame = self._frame + t
                # the frame's mean over its own window, summed in one fixed order: the same
                # numbers however the stream is cut into chunks
                smoothed = sum(values[t : t + k]) / k if k > 1 else value
                run = run + 1 if smoothed >= threshold else 0
                if self._keep_near_misses:
                    self._near_miss(j, rise, frame, value >= level, value)
                rise = (rise if rise >= 0 else frame) if value >= level else -1
                if run == self._patience and frame >= self._quiet_until[j]:
                    start = rise if rise >= 0 else frame
                    fired.append(
                        (
                            frame,
                            j,
                            Detection(
                                self._labels[j],
                                smoothed,
                                self._start + start * self._frame_seconds,
                                self._start + (frame + 1) * self._frame_seconds,
                            ),
                        )
                    )
                    self._quiet_until[j] = frame + 1 + self._refractory_frames
                    self._fired[j] = True
            self._run[j], self._rise[j] = run, rise
        self._at_rest = (
            not any(self._run)
            and max(self._rise) < 0
            and not any(row[c] >= h for row in self._history for c, h in zip(self._columns, self._rise_at))
        )
        self._frame += len(rows)
        return [detection for _, _, detection in sorted(fired, key=lambda f: f[:2])]  # time order

    def _near_miss(self, j: int, rise: int, frame: int, risen: bool, value: float) -> None:
        """Follow label j's rise: a rise that ends without firing is a near miss."""
        if risen and rise < 0:  # a new rise
            self._peak[j], self._fired[j] = value, False
        elif risen:
            self._peak[j] = max(self._peak[j], value)
        elif rise >= 0 and not self._fired[j]:  # the rise ended without firing
            start, end = self._start + rise * self._frame_seconds, self._start + frame * self._frame_seconds
            self.near_misses.append(Detection(self._labels[j], self._peak[j], start, end))
