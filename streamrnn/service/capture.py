"""Captured detections (`[capture]`, `--capture-dir`): the audio around each detection written
as FLAC with its event as JSON beside it, for review and retraining. A writer thread behind a
bounded queue does the disk work, so the loop never waits on it; past the size cap the oldest
captures go first. A full queue, a full disk or an unwritable folder is counted, never fatal."""

from __future__ import annotations

import json
import logging
import queue
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from streamrnn.captures import NEAR_MISSES, safe_name
from streamrnn.wire import DetectionEvent, wall_time

log = logging.getLogger("streamrnn")
MARGIN = 3.0  # seconds kept before what is scored, beyond `before`: a detection's rise can precede its end


@dataclass
class CaptureConfig:
    """The [capture] table."""

    dir: str = ""  # folder for the captures; empty: none
    before: float = 1.5  # seconds of audio before a detection's start
    after: float = 0.5  # seconds after its end
    max_mb: float = 500.0  # the folder's captures at most; the oldest go first
    queue: int = 64  # captures waiting for the writer at most; more are counted and dropped
    near_misses: bool = False  # also keep near misses (a score that rose to half its threshold
    # and fell back without firing) in DIR/near-misses


class _Recent:
    """One stream's recent mono audio, with the stream time where it begins: kept from a little
    before what the models have scored (input can run ahead of them) to what has arrived."""

    def __init__(self, rate: float, start: float):
        self.rate = rate
        self.pieces: deque[np.ndarray] = deque()
        self.held, self.start = 0, start  # samples held; stream seconds of the first

    @property
    def end(self) -> float:
        return self.start + self.held / self.rate

    def add(self, samples: np.ndarray) -> None:
        self.pieces.append(samples)
        self.held += len(samples)

    def forget_before(self, when: float) -> None:
        while self.pieces and self.start + len(self.pieces[0]) / self.rate <= when:
            self.held -= len(self.pieces[0])
            self.start += len(self.pieces.popleft()) / self.rate

    def cut(self, begin: float, end: float) -> np.ndarray:
        audio = np.concatenate(self.pieces) if self.pieces else np.zeros(0, np.float32)
        first = max(0, round((begin - self.start) * self.rate))
        return audio[first : max(first, round((end - self.start) * self.rate))]


class Capturer:
    def __init__(self, config: CaptureConfig, problem: Callable[[str, str], None]):
        self.config, self._problem = config, problem
        self.folder = Path(config.dir)
        self._recent: dict[str, _Recent] = {}
        self._pending: dict[str, list[DetectionEvent]] = {}
        self._queue: queue.Queue = queue.Queue(config.queue)
        self._written: deque[tuple[Path, int]] = deque()  # (capture without suffix, bytes), oldest first
        kept = [*self.folder.glob("*.json"), *self.folder.glob(f"{NEAR_MISSES}/*.json")]  # a restart counts both
        for path in sorted(kept, key=lambda p: p.stat().st_mtime):
            self._written.append((path.with_suffix(""), _size(path.with_suffix(""))))
        self._thread = threading.Thread(target=self._write_all, name="capture", daemon=True)
        self._thread.start()

    # ----- the loop's side (never blocks) ------------------------------------------------

    def feed(self, stream: str, rate: float, samples: np.ndarray, at: float) -> None:
        """A stream's mono samples as they arrive; `at`: stream seconds of the first."""
        if stream not in self._recent:
            self._recent[stream] = _Recent(rate, at)
        self._recent[stream].add(samples)
        self._complete(stream)

    def detected(self, event: DetectionEvent) -> None:
        self._pending.setdefault(event.stream, []).append(event)
        self._complete(event.stream)

    def near_miss(self, event: DetectionEvent) -> None:
        """A near miss (never published): kept like a detection, stamped here, in near-misses/."""
        self.detected(replace(event, time=wall_time(), seq=None))

    def scored(self, stream: str, position: float) -> None:
        """The models have scored `stream` up to `position` (stream seconds): older audio can go."""
        recent = self._recent.get(stream)
        if recent is not None:
            starts = [e.start for e in self._pending.get(stream, [])]
            recent.forget_before(min([position, *starts]) - self.config.before - MARGIN)

    def _complete(self, stream: str) -> None:
        """Hand over the captures of `stream` whose audio after the detection has arrived."""
        recent = self._recent.get(stream)
        pending = self._pending.get(stream, [])
        for event in [e for e in pending if recent and e.end + self.config.after <= recent.end]:
            pending.remove(event)
            self._hand_over(stream, event)

    def end(self, stream: str) -> None:
        """The stream ended: its pending captures go with the audio there is."""
        for event in self._pending.pop(stream, []):
            self._hand_over(stream, event)
        self._recent.pop(stream, None)

    def close(self) -> None:
        for stream in list(self._pending):
            self.end(stream)
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _hand_over(self, stream: str, event: DetectionEvent) -> None:
        recent = self._recent.get(stream)
        if recent is None:
            return
        audio = recent.cut(event.start - self.config.before, event.end + self.config.after)
        try:
            self._queue.put_nowait((event, audio, recent.rate))
        except queue.Full:
            self._problem("captures_dropped", f"capture: the writer is behind; {_name(event)} not kept")

    # ----- the writer thread -------------------------------------------------------------

    def _write_all(self) -> None:
        while (item := self._queue.get()) is not None:
            event, audio, rate = item
            try:
                self._write(event, audio, rate)
            except Exception as exc:  # a full disk or a vanished folder: counted, never fatal
                self._problem("capture_failures", f"capture {self.folder}: {type(exc).__name__}: {exc}")

    def _write(self, event: DetectionEvent, audio: np.ndarray, rate: float) -> None:
        import soundfile  # the writer's own: a service without captures never loads libsndfile

        folder = self.folder if event.seq is not None else self.folder / NEAR_MISSES
        folder.mkdir(parents=True, exist_ok=True)
        base = folder / _name(event)
        try:
            soundfile.write(str(base.with_suffix(".flac")), audio, int(rate), subtype="PCM_16")
            base.with_suffix(".json").write_text(json.dumps(event.to_dict()) + "\n")
        except Exception:  # a full disk: no half-written capture is left behind
            for suffix in (".flac", ".json"):
                base.with_suffix(suffix).unlink(missing_ok=True)
            raise
        self._written.append((base, _size(base)))
        total, cap = sum(size for _, size in self._written), self.config.max_mb * 1e6
        while total > cap and len(self._written) > 1:  # the newest capture always stays
            old, size = self._written.popleft()
            for suffix in (".flac", ".json"):
                old.with_suffix(suffix).unlink(missing_ok=True)
            total -= size


def unwritable(folder: str | Path) -> str | None:
    """Why captures cannot be written into `folder` (made if missing), or None: what `serve
    --check` says of a capture folder a service could not use (e.g. outside a unit's sandbox)."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            return None
    except OSError as exc:
        return f"capture.dir {folder}: cannot write captures there ({exc.strerror or exc})"


def _size(base: Path) -> int:
    """Bytes of a capture's FLAC and JSON."""
    return sum(p.stat().st_size for p in (base.with_suffix(".flac"), base.with_suffix(".json")) if p.exists())


def _name(event: DetectionEvent) -> str:
    """A file name of the event: its time, stream, label and seq, in safe characters."""
    return safe_name(f"{event.time}_{event.stream}_{event.label}_{'near' if event.seq is None else event.seq}")
