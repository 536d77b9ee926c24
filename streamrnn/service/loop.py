"""`streamrnn serve`: sources -> the stream pipeline -> published events, and the operations
around it.

One loop owns all state. Source threads hand it messages through a queue; each tick it hands
samples and stream ends to the pipeline (service/pipeline.py: every stream's samples to every
model that takes it, one batched call per model, decisions, events), then does the operations:
heartbeat, watchdog, status, reload. Signals only set flags: TERM/INT stop after the current
tick, HUP reloads the config and models.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import resource
import signal
import socket as pysocket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import zmq

from streamrnn.addresses import BindError, bind
from streamrnn.keys import ServerKeys
from streamrnn.service.capture import Capturer, unwritable
from streamrnn.service.config import ConfigError, ServiceConfig, bound_addresses, config_path, load_config
from streamrnn.service.inputs import InputQueue
from streamrnn.service.memory import release_unused_library_pages
from streamrnn.service.metrics import Metrics, Snapshot, parse_address
from streamrnn.service.notify import Notifier
from streamrnn.service.pipeline import Pipeline, check_thresholds, load_slot, plan_models
from streamrnn.service.problems import Problems
from streamrnn.service.publisher import Publisher
from streamrnn.service.signals import EarlySignals
from streamrnn.service.sources import (
    Problem,
    Samples,
    Source,
    SourceState,
    StreamEnd,
    open_source,
    open_sources,
    spec_kind,
)
from streamrnn.wire import Event, HeartbeatEvent, StatusEvent

log = logging.getLogger("streamrnn")

TICK = 0.05  # longest wait for input before timers and flags are looked at
SOURCE_RESTART = 1.0  # seconds before a failed source that runs until stopped starts again


def check_service(config: ServiceConfig) -> None:
    """`serve --check`: load every model, look at every file and device source and bind every
    address once (then let go); raises ConfigError with every problem, one line each."""
    problems: list[str] = []
    slots = []
    for i, spec in enumerate(config.models):
        try:
            slots.append(load_slot(config, spec, i))
        except (ValueError, OSError) as exc:
            problems.append(str(exc))
    if len(slots) == len(config.models):
        try:
            check_thresholds(config, slots)
        except ConfigError as exc:
            problems.append(str(exc))
    for source in config.sources:
        if spec_kind(source) in ("stdin", "ingest"):  # stdin needs nothing; ingest addresses are bound below
            continue
        try:
            open_source(source, config, models=lambda: [s.info for s in slots]).close()
        except (ValueError, OSError) as exc:
            problems.append(str(exc))
    if config.capture.dir and (problem := unwritable(config.capture.dir)):
        problems.append(problem)
    context = zmq.Context()
    for key, address in bound_addresses(config):
        try:
            bind(context.socket(zmq.XPUB if key == "publish" else zmq.PULL), address, key, close=True)
        except BindError as exc:
            problems.append(str(exc))
    context.term()
    if config.metrics:
        probe = pysocket.socket(pysocket.AF_INET6 if ":" in parse_address(config.metrics)[0] else pysocket.AF_INET)
        try:
            probe.bind(parse_address(config.metrics))
        except OSError as exc:
            problems.append(f"metrics {config.metrics}: cannot serve ({exc.strerror})")
        finally:
            probe.close()
    if problems:
        raise ConfigError("\n".join(problems))


class Service:
    def __init__(self, config: ServiceConfig, path: Path | None = None, overrides: dict | None = None):
        self.config = config
        self._config_path, self._overrides = path, overrides or {}
        self.started = time.monotonic()
        self._problems = Problems()
        self.source_states: dict[str, str] = {}
        self.failed_sources: list[str] = []  # files or stdin that failed before their end: exit status 1
        self._stop = threading.Event()
        self._stop_requested = self._reload_requested = False
        self._status_due = True
        self._input_seconds = 0.0
        slots = [load_slot(config, m, i) for i, m in enumerate(config.models)]
        check_thresholds(config, slots)
        self.capture = Capturer(config.capture, self._problem) if config.capture.dir else None
        self.pipeline = Pipeline(slots, self._publish, self._problem, config.scores_rate, self.capture)
        self._context = zmq.Context()
        # a connection that never completes its handshake (an idle TCP client) holds a file only
        # this long: ZeroMQ has no cap on connections, the file limit is the cap
        self._context.setsockopt(zmq.HANDSHAKE_IVL, round(config.handshake_timeout * 1000))
        sec = config.security
        self.keys = ServerKeys(self._context, sec.server_key, sec.clients, self._problem) if sec.server_key else None
        try:
            self.publisher = Publisher(
                self._context,
                config.publish,
                config.send_hwm,
                self.keys,
                config.max_subscriptions,
                self._problem,
                config.instance or f"{pysocket.gethostname()}:{os.getpid()}",
            )
        except Exception:
            self._close_keys_and_context()
            raise
        self.sources: list[Source] = []
        self.metrics: Metrics | None = None
        try:
            self.sources = open_sources(
                config.sources, config, self._context, self.keys, lambda: [s.info for s in self.pipeline.slots]
            )
            self.metrics = Metrics(config.metrics, self._snapshot) if config.metrics else None
        except Exception:
            self.close()
            raise
        live = [s.name for s in self.sources if not s.finite]
        held = config.input_seconds, round(config.input_mb * 2**20)
        self.inputs = InputQueue(live, any(s.finite for s in self.sources), *held)
        self.notifier = Notifier()

    # ----- reload -----------------------------------------------------------------------

    def _reload(self) -> None:
        """SIGHUP: read the config again and apply it whole or not at all: every model loads (or
        is kept, where its file is unchanged) before anything changes. Streams keep their state
        and their clock; settings read only at start are kept, and status says which changed."""
        try:
            config = load_config(self._config_path, self._overrides)
            plans = plan_models(config, self.pipeline.slots)
            check_thresholds(config, [slot for _, slot in plans])
            clients = self.keys.read_clients() if self.keys else None
        except ValueError as exc:
            self._problem("reload_failures", f"reload: {exc}; nothing changed")
            self._publish_status("running", f"reload failed, nothing changed: {exc}")
            return
        at_start = ServiceConfig.at_start_only()
        kept = [key for key in at_start if getattr(config, key) != getattr(self.config, key)]
        self.config = dataclasses.replace(config, **{key: getattr(self.config, key) for key in at_start})
        self.pipeline.swap_models(plans, self.config)
        revoked = self.keys.allow(clients) if self.keys and clients is not None else 0
        if self.keys and clients is not None:
            log.info("reload: %d client key(s) allowed from %s, %d revoked", len(clients), self.keys.clients, revoked)
        message = f"models: {', '.join(s.info.name for s in self.pipeline.slots)}"
        if kept:
            message += f"; {', '.join(kept)} changed: read at start only, kept until a restart"
        log.info("reload: %s", message)
        release_unused_library_pages()
        self._publish_status("reloaded", message)
        if revoked:  # established connections of a revoked key end now: every client reconnects
            self.publisher.reconnect_all()
            for source in self.sources:
                source.reconnect_all()

    # ----- the loop ---------------------------------------------------------------------

    def run(self, early: EarlySignals | None = None) -> int:
        """Serve until stopped; `early` holds signals that came while starting (acted on now)."""
        handlers = {signal.SIGTERM: self._on_stop, signal.SIGINT: self._on_stop, signal.SIGHUP: self._on_reload}
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        for signum in early.received if early else []:
            handlers[signal.Signals(signum)](signum, None)
        log.info(
            "serving %s on %s; publishing on %s",
            ", ".join(f"{s.info.name} {s.info.version}" for s in self.pipeline.slots),
            ", ".join(s.name for s in self.sources),
            self.config.publish,
        )
        release_unused_library_pages()  # after the models' first load: what start-up read and serving won't
        self.notifier.send("READY=1", f"STATUS={self._summary()}")
        if self.config.wait_subscriber > 0:
            self.publisher.wait_for_subscriber(self.config.wait_subscriber)
        threads = [threading.Thread(target=self._run_source, args=(s,), daemon=True, name=s.name) for s in self.sources]
        for t in threads:
            t.start()
        next_heartbeat = next_watchdog = last_status = time.monotonic()
        while not self._stop_requested:
            self._take_input()
            work = time.monotonic()
            self.pipeline.run_models()
            for stream in self.pipeline.drop_ended_streams():
                for source in self.sources:
                    source.on_stream_done(stream)
            if self.metrics:
                self.metrics.tick.observe(time.monotonic() - work + self._input_seconds)
            if self.pipeline.changed:
                self.pipeline.changed, self._status_due = False, True
            now = time.monotonic()
            self.publisher.poll()
            if self.notifier.watchdog_interval and now >= next_watchdog:
                self.notifier.send("WATCHDOG=1")
                next_watchdog = now + self.notifier.watchdog_interval
            if now >= next_heartbeat:
                self.publisher.publish(HeartbeatEvent(**self._stats()))
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
        """Run a source in its thread; one that runs until stopped (mic, ingest) and fails anyway
        is counted, reported and started again."""
        emit = self._emitter(source)
        while True:
            try:
                source.run(emit, self._stop)
                break
            except Exception as exc:  # a broken source must not take the service down
                self._problem("source_failures", f"{source.name}: {type(exc).__name__}: {exc}")
                if source.finite:
                    self.failed_sources.append(source.name)
                if source.finite or self._stop.is_set():
                    break
                emit(SourceState(source.name, f"restarting: {type(exc).__name__}: {exc}"))
                if self._stop.wait(SOURCE_RESTART):
                    break
                emit(SourceState(source.name, "running"))
        emit(SourceState(source.name, "ended"))

    def _emitter(self, source: Source) -> Callable[[object], None]:
        """The `emit` of one source: problems are counted at once; samples of a source that runs
        until stopped are dropped (and counted) past its share of the input; stream ends, states,
        and the samples of files and stdin wait for room, so none of them is ever lost."""

        def emit(message: object) -> None:
            if isinstance(message, Problem):
                self._problem(message.counter, message.message)
                return
            if isinstance(message, (Samples, StreamEnd)):
                message.source = source.name
            if isinstance(message, Samples) and not source.finite:
                if not self.inputs.offer(source.name, message):
                    self._problem("queue_overflows", f"input from {source.name} dropped: past its share of the input")
                return
            self.inputs.put(message, self._stop, TICK)  # offered even after stop, but never waited for then

        return emit

    def _take_input(self) -> None:
        """One tick's input: what is waiting, up to the signal one tick scores (inputs.TICK_SIGNAL)."""
        self._input_seconds = 0.0
        messages = self.inputs.take(timeout=TICK)
        started = time.monotonic()
        for message in messages:
            if self.metrics and isinstance(message, Samples):
                self.metrics.lag.observe(started - message.received)
            self._handle(message)
        self._input_seconds = time.monotonic() - started

    def _handle(self, message) -> None:
        if isinstance(message, Samples):
            try:
                self.pipeline.feed(message)
            except Exception as exc:  # one piece of input never stops the service
                self._problem("input_failures", f"stream {message.stream}: {type(exc).__name__}: {exc}; dropped")
        elif isinstance(message, StreamEnd):
            if message.stream in self.pipeline.streams:
                self.pipeline.end_stream(message.stream, message.source)
            else:  # it never started (no audio got in): done already, its source may answer now
                for source in self.sources:
                    source.on_stream_done(message.stream)
        elif isinstance(message, SourceState):
            self.source_states[message.source] = message.state
            self._status_due = True
            log.info("source %s: %s", message.source, message.state)

    def _finished(self) -> bool:
        ended = [self.source_states.get(s.name) == "ended" for s in self.sources]
        return all(ended) and all(s.finite for s in self.sources) and not self.inputs.waiting()

    def _shutdown(self, threads: list[threading.Thread]) -> int:
        self._stop.set()
        self.notifier.send("STOPPING=1")
        self._publish_status("stopping", self._summary())
        for t in threads:
            t.join(timeout=0.3)
        self.close()
        if self.failed_sources:
            log.error("stopped; %s failed before their end (exit status 1)", ", ".join(self.failed_sources))
            return 1
        log.info("stopped")
        return 0

    def close(self) -> None:
        if self.capture:
            self.capture.close()  # what is pending is written first
        if self.metrics:
            self.metrics.close()
        for source in self.sources:
            source.close()
        self.publisher.close()
        self._close_keys_and_context()

    def _close_keys_and_context(self) -> None:
        if self.keys:
            self.keys.close()
        self._context.term()

    # ----- reporting --------------------------------------------------------------------

    def _on_stop(self, signum, frame) -> None:
        self._stop_requested = True

    def _on_reload(self, signum, frame) -> None:
        self._reload_requested = True

    def _publish(self, event: Event) -> Event:
        event = self.publisher.publish(event)
        for source in self.sources:
            source.on_event(event)
        return event

    def _problem(self, counter: str, message: str) -> None:
        """Count one dropped or failed thing (from any thread); status goes out soon after."""
        self._problems.count(counter, message)
        self._status_due = True

    @property
    def problems(self) -> dict[str, int]:
        """Every problem counted so far, by kind."""
        return self._problems.counts()

    def _snapshot(self) -> Snapshot:
        """The counts a metrics scrape reads (from the metrics server's thread)."""
        return Snapshot(
            frames=self.pipeline.frames,
            events=self.publisher.published,
            drops=self.publisher.drops,
            streams=len(self.pipeline.streams),
            subscribers=max(0, self.publisher.subscribers),
            problems=self.problems,
            detections=dict(self.pipeline.detections),
            load_seconds={s.info.name: s.load_seconds for s in self.pipeline.slots},
            gated_frames={s.info.name: s.runtime.gated_frames for s in self.pipeline.slots},
            checked_frames={s.info.name: s.runtime.checked_frames for s in self.pipeline.slots},
        )

    def _stats(self) -> dict:
        return {
            "uptime": round(time.monotonic() - self.started, 3),
            "streams": len(self.pipeline.streams),
            "frames": self.pipeline.frames,
            "events": self.publisher.published,
            "drops": self.publisher.drops,
            "subscribers": max(0, self.publisher.subscribers),
            "problems": self.problems,
        }

    def _publish_status(self, state: str, message: str) -> None:
        self._status_due = False
        models = [{"name": s.info.name, "version": s.info.version, "path": str(s.path)} for s in self.pipeline.slots]
        self.publisher.publish(
            StatusEvent(state=state, message=message, sources=dict(self.source_states), models=models, **self._stats())
        )

    def _summary(self) -> str:
        problems = sum(self.problems.values())
        return (
            f"{len(self.pipeline.streams)} streams, {self.pipeline.frames} frames, {self.publisher.published} events, "
            f"{self.publisher.drops} drops, {problems} problems"
        )


def serve(path: str | None, overrides: dict, early: EarlySignals | None = None) -> int:
    """Load the config, start the service, run until stopped; returns the exit status."""
    in_force = config_path(path)
    config = load_config(in_force, overrides)
    logging.basicConfig(level=config.log_level.upper(), format="streamrnn: %(levelname)s %(message)s")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:  # every connection is a file: take all the system allows this process
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return Service(config, in_force, overrides).run(early)
