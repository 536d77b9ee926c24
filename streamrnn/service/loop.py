"""`streamrnn serve`: sources -> batched streaming inference -> decisions -> published events.

One loop owns all state. Source threads hand it messages through a queue; each tick it feeds
every stream's samples to every model that takes them (converted to the model's rate), runs one
batched call per model for all streams holding a full chunk, turns scores into detections and
publishes them. Signals only set flags: TERM/INT stop after the current tick, HUP reloads the
config and models.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import soxr
import zmq

from streamrnn.audio import to_mono
from streamrnn.catalog import resolve_model
from streamrnn.decision import Decider, DecisionSettings
from streamrnn.runtime import StreamingModel
from streamrnn.service.config import ConfigError, ModelConfig, ServiceConfig, config_path, load_config
from streamrnn.service.notify import Notifier
from streamrnn.service.publisher import Publisher
from streamrnn.service.sources import Problem, Samples, Source, SourceState, StreamEnd, open_sources, spec_kind
from streamrnn.wire import detection_event, heartbeat_event, scores_event, status_event

log = logging.getLogger("streamrnn")

TICK = 0.05  # longest wait for input before timers and flags are looked at
QUEUE_LIMIT = 10000  # messages from sources not yet handled
PROBLEM_LOG_EVERY = 10.0  # seconds between log lines about the same kind of problem


def _fingerprint(path: Path) -> tuple:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


@dataclass
class ModelSlot:
    """A served model and its per-stream companions (decider, resampler)."""

    spec: ModelConfig
    path: Path
    fingerprint: tuple
    runtime: StreamingModel
    settings: DecisionSettings
    deciders: dict[str, Decider] = field(default_factory=dict)
    resamplers: dict[str, soxr.ResampleStream | None] = field(default_factory=dict)
    scores_sent: dict[str, float] = field(default_factory=dict)

    @property
    def info(self):
        return self.runtime.info

    def takes(self, kind: str, channels: int) -> bool:
        return self.info.kind == kind and (kind == "audio" or self.info.channels == channels)

    def add_stream(self, stream: str, rate: float, channels: int) -> None:
        self.runtime.add_stream(stream)
        self.deciders[stream] = Decider(self.info, self.settings, self.spec.thresholds)
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


def load_slot(config: ServiceConfig, spec: ModelConfig, index: int) -> ModelSlot:
    """Load one configured model; thresholds must name its labels."""
    path = resolve_model(spec.model)
    runtime = StreamingModel(path, config.device, config.threads)
    unknown = sorted(set(spec.thresholds) - set(runtime.info.labels))
    if unknown:
        raise ConfigError(
            f"{config.source}: models[{index}].thresholds: {', '.join(unknown)} "
            f"not a label of model {runtime.info.name} ({', '.join(runtime.info.labels)})"
        )
    return ModelSlot(spec, path, _fingerprint(path), runtime, config.decision_for(spec))


def check_service(config: ServiceConfig) -> None:
    """`serve --check`: load every model and look at every file and device source, bind nothing."""
    for i, spec in enumerate(config.models):
        load_slot(config, spec, i)
    for source in config.sources:
        if spec_kind(source) == "mic":
            from streamrnn.service.sources.mic import MicSource

            MicSource(source.partition(":")[2], config.mic)
        elif spec_kind(source) == "file":
            from streamrnn.service.sources.file import FileSource

            FileSource(source, source, realtime=False)


@dataclass
class StreamRecord:
    kind: str
    rate: float
    channels: int
    ended: bool = False


class Service:
    def __init__(self, config: ServiceConfig, path: Path | None = None, overrides: dict | None = None):
        self.config = config
        self._config_path, self._overrides = path, overrides or {}
        self.started = time.monotonic()
        self.problems: dict[str, int] = {}
        self._problem_logged: dict[str, float] = {}
        self.frames = 0
        self.streams: dict[str, StreamRecord] = {}
        self.source_states: dict[str, str] = {}
        self._queue: queue.Queue = queue.Queue(QUEUE_LIMIT)
        self._overflow_lock = threading.Lock()
        self._overflows = 0
        self._stop = threading.Event()
        self._stop_requested = self._reload_requested = False
        self._status_due = True
        self.slots = [load_slot(config, m, i) for i, m in enumerate(config.models)]
        self._context = zmq.Context()
        try:
            self.publisher = Publisher(self._context, config.publish, config.send_hwm)
        except Exception:
            self._context.term()
            raise
        self.sources: list[Source] = []
        try:
            self.sources = open_sources(config.sources, config, self._context)
        except Exception:
            self.close()
            raise
        self.notifier = Notifier()

    # ----- reload -----------------------------------------------------------------------

    def _reload(self) -> None:
        """SIGHUP: read the config again and load changed models; keep what fails, say why."""
        try:
            config = load_config(self._config_path, self._overrides)
        except ValueError as exc:
            self._problem("reload_failures", f"reload: {exc}; keeping the running configuration")
            return
        self.config, old, slots = config, {s.spec.model: s for s in self.slots}, []
        for i, spec in enumerate(config.models):
            current = old.get(spec.model)
            try:
                path = resolve_model(spec.model)
                if current and current.path == path and current.fingerprint == _fingerprint(path):
                    slots.append(self._reuse(current, spec))
                    continue
                slot = load_slot(config, spec, i)
            except (ValueError, OSError) as exc:
                self._problem(
                    "reload_failures",
                    f"reload: {exc}; " + ("keeping the loaded model" if current else "model not added"),
                )
                if current:
                    slots.append(current)
                continue
            for stream, record in self.streams.items():
                if slot.takes(record.kind, record.channels) and not record.ended:
                    slot.add_stream(stream, record.rate, record.channels)
            log.info("reload: loaded %s %s from %s", slot.info.name, slot.info.version, slot.path)
            slots.append(slot)
        self.slots = slots
        self._publish_status("reloaded", f"models: {', '.join(s.info.name for s in slots)}")

    def _reuse(self, slot: ModelSlot, spec: ModelConfig) -> ModelSlot:
        """Same model file: streams keep their state; new decision settings start new deciders."""
        settings = self.config.decision_for(spec)
        if settings != slot.settings or spec.thresholds != slot.spec.thresholds:
            slot.settings, slot.spec = settings, spec
            slot.deciders = {s: Decider(slot.info, settings, spec.thresholds) for s in slot.deciders}
        return slot

    # ----- the loop ---------------------------------------------------------------------

    def run(self) -> int:
        for sig, handler in (
            (signal.SIGTERM, self._on_stop),
            (signal.SIGINT, self._on_stop),
            (signal.SIGHUP, self._on_reload),
        ):
            signal.signal(sig, handler)
        log.info(
            "serving %s on %s; publishing on %s",
            ", ".join(f"{s.info.name} {s.info.version}" for s in self.slots),
            ", ".join(s.name for s in self.sources),
            self.config.publish,
        )
        self.notifier.send("READY=1", f"STATUS={self._summary()}")
        if self.config.wait_subscriber > 0:
            self.publisher.wait_for_subscriber(self.config.wait_subscriber)
        threads = [threading.Thread(target=self._run_source, args=(s,), daemon=True, name=s.name) for s in self.sources]
        for t in threads:
            t.start()
        next_heartbeat = next_watchdog = last_status = time.monotonic()
        while not self._stop_requested:
            self._take_input()
            self._run_models()
            self._drop_ended_streams()
            now = time.monotonic()
            self.publisher.poll()
            if self.notifier.watchdog_interval and now >= next_watchdog:
                self.notifier.send("WATCHDOG=1")
                next_watchdog = now + self.notifier.watchdog_interval
            if now >= next_heartbeat:
                self.publisher.publish(heartbeat_event(self._stats()))
                self.notifier.send(f"STATUS={self._summary()}")
                next_heartbeat = now + self.config.heartbeat
            if (self._status_due and now - last_status >= 1.0) or now - last_status >= self.config.status_interval:
                self._publish_status("running", self._summary())
                last_status = now
            if self._reload_requested:
                self._reload_requested = False
                self._reload()
            if self._finished():
                log.info("all sources ended")
                break
        return self._shutdown(threads)

    def _run_source(self, source: Source) -> None:
        emit = self._queue.put if source.finite else self._put_nowait
        try:
            source.run(emit, self._stop)
        except Exception as exc:  # a broken source must not take the service down
            emit(Problem("source_failures", f"{source.name}: {type(exc).__name__}: {exc}"))
        finally:
            emit(SourceState(source.name, "ended"))

    def _put_nowait(self, message) -> None:
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            with self._overflow_lock:
                self._overflows += 1

    def _take_input(self) -> None:
        try:
            message = self._queue.get(timeout=TICK)
        except queue.Empty:
            return
        for _ in range(QUEUE_LIMIT):
            self._handle(message)
            try:
                message = self._queue.get_nowait()
            except queue.Empty:
                break
        with self._overflow_lock:
            lost, self._overflows = self._overflows, 0
        if lost:
            self._problem("queue_overflows", f"{lost} input message(s) dropped: the service fell behind")

    def _handle(self, message) -> None:
        if isinstance(message, Samples):
            self._feed(message)
        elif isinstance(message, StreamEnd):
            self._end_stream(message.stream)
        elif isinstance(message, Problem):
            self._problem(message.counter, message.message)
        elif isinstance(message, SourceState):
            self.source_states[message.source] = message.state
            self._status_due = True
            log.info("source %s: %s", message.source, message.state)

    def _feed(self, piece: Samples) -> None:
        channels = 1 if piece.samples.ndim == 1 else piece.samples.shape[1]
        record = self.streams.get(piece.stream)
        if record is not None and record.ended:  # an id used again right after its stream ended
            self._run_models()
            self._drop_ended_streams()
            record = None
        if record is None:
            record = self.streams[piece.stream] = StreamRecord(piece.kind, piece.rate, channels)
            takers = [s for s in self.slots if s.takes(piece.kind, channels)]
            if not takers:
                self._problem(
                    "streams_unserved", f"stream {piece.stream}: no model takes {piece.kind} with {channels} channel(s)"
                )
            for slot in takers:
                slot.add_stream(piece.stream, piece.rate, channels)
            log.info("stream %s: started (%s, %g Hz, %d channel(s))", piece.stream, piece.kind, piece.rate, channels)
            self._status_due = True
        elif (piece.kind, piece.rate, channels) != (record.kind, record.rate, record.channels):
            self._problem(
                "format_changes",
                f"stream {piece.stream}: format changed mid-stream "
                f"({record.kind}/{record.rate:g} Hz/{record.channels} ch -> "
                f"{piece.kind}/{piece.rate:g} Hz/{channels} ch); piece dropped",
            )
            return
        audio = to_mono(piece.samples) if piece.kind == "audio" else piece.samples
        for slot in self.slots:
            if piece.stream in slot.deciders:
                slot.feed(piece.stream, audio)

    def _end_stream(self, stream: str) -> None:
        record = self.streams.get(stream)
        if record is None or record.ended:
            return
        record.ended = True
        for slot in self.slots:
            if stream in slot.deciders:
                slot.end_stream(stream)

    def _run_models(self) -> None:
        for slot in self.slots:
            while out := slot.runtime.step():
                now = time.monotonic()
                for key, scores in out.items():
                    stream = cast(str, key)  # the service's stream ids are their names
                    self.frames += len(scores)
                    for detection in slot.deciders[stream].update(scores):
                        event = self.publisher.publish(detection_event(stream, slot.info, detection))
                        log.info(
                            "detection %s %s %.3f at %.2f-%.2f s (seq %d)",
                            stream,
                            detection.label,
                            detection.score,
                            detection.start,
                            detection.end,
                            event["seq"],
                        )
                    if (
                        self.config.scores_rate
                        and now - slot.scores_sent.get(stream, 0.0) >= 1 / self.config.scores_rate
                    ):
                        slot.scores_sent[stream] = now
                        end = slot.runtime.stream_frames(stream) * slot.info.frame_seconds
                        self.publisher.publish(scores_event(stream, slot.info, end, scores[-1]))

    def _drop_ended_streams(self) -> None:
        for stream in [s for s, r in self.streams.items() if r.ended]:
            for slot in self.slots:
                if stream in slot.deciders:
                    slot.remove_stream(stream)
            del self.streams[stream]
            log.info("stream %s: ended", stream)
            self._status_due = True

    def _finished(self) -> bool:
        ended = [self.source_states.get(s.name) == "ended" for s in self.sources]
        return all(ended) and all(s.finite for s in self.sources) and self._queue.empty()

    def _shutdown(self, threads: list[threading.Thread]) -> int:
        self._stop.set()
        self.notifier.send("STOPPING=1")
        self._publish_status("stopping", self._summary())
        for t in threads:
            t.join(timeout=0.3)
        self.close()
        log.info("stopped")
        return 0

    def close(self) -> None:
        for source in self.sources:
            source.close()
        self.publisher.close()
        self._context.term()

    # ----- reporting --------------------------------------------------------------------

    def _on_stop(self, signum, frame) -> None:
        self._stop_requested = True

    def _on_reload(self, signum, frame) -> None:
        self._reload_requested = True

    def _problem(self, counter: str, message: str) -> None:
        self.problems[counter] = self.problems.get(counter, 0) + 1
        self._status_due = True
        now = time.monotonic()
        if now - self._problem_logged.get(counter, -PROBLEM_LOG_EVERY) >= PROBLEM_LOG_EVERY:
            self._problem_logged[counter] = now
            log.warning("%s (%s: %d so far)", message, counter, self.problems[counter])

    def _stats(self) -> dict:
        return {
            "uptime": round(time.monotonic() - self.started, 3),
            "streams": len(self.streams),
            "frames": self.frames,
            "events": self.publisher.published,
            "drops": self.publisher.drops,
            "subscribers": max(0, self.publisher.subscribers),
            "problems": dict(self.problems),
        }

    def _publish_status(self, state: str, message: str) -> None:
        self._status_due = False
        stats = self._stats()
        stats.update(
            sources=dict(self.source_states),
            models=[{"name": s.info.name, "version": s.info.version, "path": str(s.path)} for s in self.slots],
        )
        self.publisher.publish(status_event(state, message, stats))

    def _summary(self) -> str:
        problems = sum(self.problems.values())
        return (
            f"{len(self.streams)} streams, {self.frames} frames, {self.publisher.published} events, "
            f"{self.publisher.drops} drops, {problems} problems"
        )


def serve(path: str | None, overrides: dict) -> int:
    """Load the config, start the service, run until stopped; returns the exit status."""
    in_force = config_path(path)
    config = load_config(in_force, overrides)
    logging.basicConfig(level=config.log_level.upper(), format="streamrnn: %(levelname)s %(message)s")
    return Service(config, in_force, overrides).run()
