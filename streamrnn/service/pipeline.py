"""The stream pipeline of `streamrnn serve`: stream records, model slots, feed, batched runs,
decisions, the end of streams. No sockets, threads or signals: the loop (service/loop.py) hands
it what sources deliver and gives it the functions to publish events and count problems.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import soxr

from streamrnn.audio import to_mono
from streamrnn.catalog import resolve_model
from streamrnn.decision import Decider, DecisionSettings
from streamrnn.runtime import Gate, StreamingModel, check_gate
from streamrnn.service.capture import Capturer
from streamrnn.service.config import ConfigError, ServedModel, ServiceConfig
from streamrnn.service.sources import Samples
from streamrnn.wire import DetectionEvent, Event, ScoresEvent

log = logging.getLogger("streamrnn")


def file_fingerprint(path: Path) -> tuple:
    """What tells a model file changed since it was loaded (for reload)."""
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


@dataclass
class ModelSlot:
    """A served model and its per-stream companions (decider, resampler)."""

    spec: ServedModel
    path: Path
    fingerprint: tuple
    runtime: StreamingModel
    settings: DecisionSettings
    thresholds: dict[str, float]  # over the model's own (config.thresholds_for)
    load_seconds: float  # how long its file took to load
    near_misses: bool = False  # whether its deciders keep near misses (for captures)
    deciders: dict[str, Decider] = field(default_factory=dict)
    resamplers: dict[str, soxr.ResampleStream | None] = field(default_factory=dict)
    scores_sent: dict[str, float] = field(default_factory=dict)

    @property
    def info(self):
        return self.runtime.info

    def takes(self, kind: str, channels: int) -> bool:
        return self.info.kind == kind and (kind == "audio" or self.info.channels == channels)

    def add_stream(self, stream: str, rate: float, channels: int, start: float = 0.0) -> None:
        """Serve a stream from its `start` (stream seconds: later than 0 for a model added on reload)."""
        self.runtime.add_stream(stream)
        self.deciders[stream] = Decider(self.info, self.settings, self.thresholds, start, self.near_misses)
        self.resamplers[stream] = (
            None
            if rate == self.info.sample_rate
            else soxr.ResampleStream(
                rate, self.info.sample_rate, channels if self.info.kind == "sensor" else 1, dtype="float32"
            )
        )

    def feed(self, stream: str, samples: np.ndarray, last: bool = False) -> None:
        converter = self.resamplers[stream]
        if converter is not None:
            samples = converter.resample_chunk(samples, last=last)
        self.runtime.feed(stream, samples)

    def end_stream(self, stream: str) -> None:
        """Flush converter and partial chunk so the stream's tail gets scored."""
        if self.resamplers[stream] is not None:
            self.feed(stream, np.zeros((0, *self.runtime.sample_shape), np.float32), last=True)
        self.runtime.flush(stream)

    def remove_stream(self, stream: str) -> None:
        self.runtime.remove_stream(stream)
        for table in (self.deciders, self.resamplers, self.scores_sent):
            table.pop(stream, None)


def _gate(spec: ServedModel) -> Gate | None:
    return Gate.of(spec.gate_dbfs, spec.gate_settle)


def load_slot(config: ServiceConfig, spec: ServedModel, index: int) -> ModelSlot:
    """Load one configured model; thresholds must name its labels."""
    path = resolve_model(spec.model)
    started = time.perf_counter()
    runtime = StreamingModel(path, config.device, config.threads)
    try:
        runtime.set_gate(_gate(spec))
    except ValueError as exc:
        raise ConfigError(f"{config.source}: models[{index}].gate_dbfs: {exc}") from None
    runtime.warm_up()
    load_seconds = time.perf_counter() - started
    unknown = sorted(set(spec.thresholds) - set(runtime.info.labels))
    if unknown:
        raise ConfigError(
            f"{config.source}: models[{index}].thresholds: {', '.join(unknown)} "
            f"not a label of model {runtime.info.name} ({', '.join(runtime.info.labels)})"
        )
    thresholds = config.thresholds_for(spec, runtime.info.labels)
    near_misses = bool(config.capture.dir) and config.capture.near_misses
    settings = config.decision_for(spec)
    return ModelSlot(spec, path, file_fingerprint(path), runtime, settings, thresholds, load_seconds, near_misses)


def plan_models(config: ServiceConfig, running: list[ModelSlot]) -> list[tuple[ServedModel, ModelSlot]]:
    """Each configured model's slot on reload: the running one where its file is unchanged, else
    newly loaded; raises ValueError on the first that fails (then nothing is changed)."""
    by_model = {s.spec.model: s for s in running}
    plans = []
    for i, spec in enumerate(config.models):
        current = by_model.get(spec.model)
        try:
            path = resolve_model(spec.model)
            unchanged = current and current.path == path and current.fingerprint == file_fingerprint(path)
            if current and unchanged:
                try:
                    check_gate(current.info, _gate(spec))
                except ValueError as exc:
                    raise ValueError(f"models[{i}].gate_dbfs: {exc}") from None
            plans.append((spec, current if current and unchanged else load_slot(config, spec, i)))
        except OSError as exc:
            raise ValueError(f"models[{i}] {spec.model}: {exc}") from None
    return plans


def check_thresholds(config: ServiceConfig, slots: list[ModelSlot]) -> None:
    """Every top-level threshold names a label of some served model."""
    served = {label for slot in slots for label in slot.info.labels}
    if unknown := sorted(set(config.thresholds) - served):
        models = "; ".join(f"{s.info.name}: {', '.join(s.info.labels)}" for s in slots)
        raise ConfigError(f"{config.source}: thresholds: {', '.join(unknown)} not a label of any model ({models})")


@dataclass
class StreamRecord:
    kind: str
    rate: float
    channels: int
    source: str  # the one source whose samples and end this stream takes
    seconds: float = 0.0  # of samples taken so far: the stream's clock
    ended: bool = False


class Pipeline:
    """Every stream through every model that takes it. `publish` sends an event and returns it
    stamped; `problem(counter, message)` counts what is dropped."""

    def __init__(
        self,
        slots: list[ModelSlot],
        publish: Callable[[Event], Event],
        problem: Callable[[str, str], None],
        scores_rate: float = 0.0,
        capture: Capturer | None = None,
    ):
        self.slots = slots
        self.publish, self.problem, self.scores_rate = publish, problem, scores_rate
        self.capture = capture  # keeps the audio around detections
        self.streams: dict[str, StreamRecord] = {}
        self.frames = 0
        self.detections: dict[tuple[str, str], int] = {}  # (model, label) -> detections
        self.changed = False  # a stream started or ended since the owner last looked

    def swap_models(self, plans: list[tuple[ServedModel, ModelSlot]], config: ServiceConfig) -> None:
        """Serve the planned slots from now on. A running slot keeps its streams' state (new
        decision settings start new deciders where the old ones were in stream time); a new one
        joins every running stream on its clock, so event times go on from where the stream is."""
        slots = []
        for spec, slot in plans:
            if slot in self.slots:
                slot.runtime.set_gate(_gate(spec))  # an audio model: checked when it loaded
                settings, thresholds = config.decision_for(spec), config.thresholds_for(spec, slot.info.labels)
                if settings != slot.settings or thresholds != slot.thresholds:
                    slot.settings, slot.spec, slot.thresholds = settings, spec, thresholds
                    slot.deciders = {
                        s: Decider(slot.info, settings, thresholds, d.position, slot.near_misses)
                        for s, d in slot.deciders.items()
                    }
            else:
                for stream, record in self.streams.items():
                    if slot.takes(record.kind, record.channels) and not record.ended:
                        slot.add_stream(stream, record.rate, record.channels, record.seconds)
                log.info("reload: loaded %s %s from %s", slot.info.name, slot.info.version, slot.path)
            slots.append(slot)
        for slot in self.slots:
            if slot not in slots:
                log.info("reload: removed %s", slot.info.name)
        self.slots, self.scores_rate = slots, config.scores_rate

    def feed(self, piece: Samples) -> None:
        """Samples of a stream to every model that takes them; a new id starts a stream."""
        channels = 1 if piece.samples.ndim == 1 else piece.samples.shape[1]
        record = self.streams.get(piece.stream)
        if record is not None and record.ended:  # an id used again right after its stream ended
            self.run_models()
            self.drop_ended_streams()
            record = None
        if record is not None and record.source != piece.source:
            self.problem(
                "streams_owned_elsewhere",
                f"stream {piece.stream}: belongs to {record.source}, not {piece.source}; piece dropped",
            )
            return
        if record is None:
            start = piece.start or 0.0  # a sender that outlived a restart of the service says where it is
            record = self.streams[piece.stream] = StreamRecord(piece.kind, piece.rate, channels, piece.source, start)
            takers = [s for s in self.slots if s.takes(piece.kind, channels)]
            if not takers:
                self.problem(
                    "streams_unserved", f"stream {piece.stream}: no model takes {piece.kind} with {channels} channel(s)"
                )
            for slot in takers:
                slot.add_stream(piece.stream, piece.rate, channels, start)
            log.info("stream %s: started (%s, %g Hz, %d channel(s))", piece.stream, piece.kind, piece.rate, channels)
            self.changed = True
        elif (piece.kind, piece.rate, channels) != (record.kind, record.rate, record.channels):
            self.problem(
                "format_changes",
                f"stream {piece.stream}: format changed mid-stream "
                f"({record.kind}/{record.rate:g} Hz/{record.channels} ch -> "
                f"{piece.kind}/{piece.rate:g} Hz/{channels} ch); piece dropped",
            )
            return
        at, record.seconds = record.seconds, record.seconds + len(piece.samples) / piece.rate
        audio = to_mono(piece.samples) if piece.kind == "audio" else piece.samples
        if self.capture and piece.kind == "audio" and any(piece.stream in s.deciders for s in self.slots):
            self.capture.feed(piece.stream, piece.rate, audio, at)  # only what a model scores: it is let go then
        for slot in self.slots:
            if piece.stream in slot.deciders:
                slot.feed(piece.stream, audio)

    def end_stream(self, stream: str, source: str = "") -> None:
        """The stream ends: its tail is scored at the next run, then it is dropped (only its own
        source can end it)."""
        record = self.streams.get(stream)
        if record is not None and record.source != source:
            self.problem(
                "streams_owned_elsewhere", f"stream {stream}: belongs to {record.source}; end from {source} ignored"
            )
            return
        if record is None or record.ended:
            return
        record.ended = True
        for slot in self.slots:
            if stream in slot.deciders:
                slot.end_stream(stream)

    def run_models(self) -> None:
        """Batched calls until no stream holds a full chunk; detections and scores published."""
        for slot in self.slots:
            while out := slot.runtime.step():
                now = time.monotonic()
                for key, scores in out.items():
                    stream = cast(str, key)  # the service's stream ids are their names
                    self.frames += len(scores)
                    for detection in slot.deciders[stream].update(scores):
                        event = cast(DetectionEvent, self.publish(DetectionEvent.of(stream, slot.info, detection)))
                        if self.capture:
                            self.capture.detected(event)
                        key = (slot.info.name, detection.label)
                        self.detections[key] = self.detections.get(key, 0) + 1
                        log.info(
                            "detection %s %s %.3f at %.2f-%.2f s (seq %d)",
                            stream,
                            detection.label,
                            detection.score,
                            detection.start,
                            detection.end,
                            event.seq,
                        )
                    if self.capture and slot.near_misses:
                        for near in slot.deciders[stream].near_misses:
                            self.capture.near_miss(DetectionEvent.of(stream, slot.info, near))
                        slot.deciders[stream].near_misses.clear()
                    if self.scores_rate and now - slot.scores_sent.get(stream, 0.0) >= 1 / self.scores_rate:
                        slot.scores_sent[stream] = now
                        end = slot.deciders[stream].position
                        self.publish(ScoresEvent.of(stream, slot.info, end, scores[-1]))
        if self.capture:
            for stream in self.streams:
                scored = [s.deciders[stream].position for s in self.slots if stream in s.deciders]
                self.capture.scored(stream, min(scored, default=0.0))

    def drop_ended_streams(self) -> list[str]:
        """Forget the streams that ended (all scored by now); returns them."""
        ended = [s for s, r in self.streams.items() if r.ended]
        for stream in ended:
            for slot in self.slots:
                if stream in slot.deciders:
                    slot.remove_stream(stream)
            if self.capture:
                self.capture.end(stream)
            del self.streams[stream]
            log.info("stream %s: ended", stream)
            self.changed = True
        return ended
