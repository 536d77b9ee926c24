"""Sources: each runs in its own thread and hands the service messages through one callback.

Messages: `Samples` (a piece of a stream at the source's own rate), `StreamEnd` (no more
samples on a stream), `Problem` (something counted, and dropped where it was data),
`SourceState` (how a source is doing, reported in status).
`open_source(spec)` turns a `--source` spec into a source; binding and device checks happen
there, so bad specs fail at start-up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamrnn.ingest_format import MAX_STREAM_ID


@dataclass
class Samples:
    stream: str
    samples: np.ndarray  # float32 [n] (audio) or [n, channels] (sensor)
    rate: float
    kind: str = "audio"  # audio | sensor
    received: float = field(default_factory=time.monotonic)  # when the service was handed them
    source: str = ""  # the source that sent them (set by the loop): a stream belongs to one source
    start: float | None = None  # stream seconds of the first sample as the sender counts them: where
    # the clock of a stream the service has not seen begins (a sender that outlived a service restart)


@dataclass
class StreamEnd:
    stream: str
    source: str = ""


@dataclass
class SourceState:
    source: str
    state: str  # running | retrying: REASON | ended


@dataclass
class Problem:
    counter: str  # name of the counter in status/heartbeat
    message: str  # one line for the log
    stream: str | None = None


Emit = Callable[[object], None]


@dataclass
class SpeedCredit:
    """The seconds of signal a remote stream may still send now: refilled at `speed` seconds per
    second, up to `burst` seconds ahead (the `[ingest]` table's max_speed and burst_seconds)."""

    speed: float
    burst: float
    credit: float = field(init=False)
    seen: float = field(init=False, default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.credit = self.burst

    def take(self, seconds: float) -> bool:
        """Spend `seconds` of signal if the stream has them; False (nothing spent) if not."""
        now = time.monotonic()
        self.credit = min(self.burst + seconds, self.credit + (now - self.seen) * self.speed)
        self.seen = now
        if seconds > self.credit:
            return False
        self.credit -= seconds
        return True


class Source:
    """One input. `run` blocks until the source ends or `stop` is set."""

    name: str = ""
    finite: bool = True  # ends by itself (files, stdin); mic and ingest run until stopped

    def run(self, emit: Emit, stop: threading.Event) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release sockets or devices (called after `run` has returned)."""

    def on_event(self, event) -> None:
        """Every event the service publishes, from the loop's thread (a source that answers its
        senders, as Wyoming does, takes its streams' detections here)."""

    def reconnect_all(self) -> None:
        """Drop every remote sender's connection, so each is asked for its key again (a reload
        that revoked a key; from the loop's thread: a source acts on it in its own)."""

    def on_stream_done(self, stream: str) -> None:
        """A stream has ended and all its audio is scored (from the loop's thread)."""


def unique_stream_ids(paths: list[str]) -> list[str]:
    """Stream ids for files: the file stem (spaces, dots and control characters as `_`, so it is
    one topic part), numbered where stems repeat."""
    seen: dict[str, int] = {}
    ids = []
    for p in paths:
        stem = "".join(c if c.isprintable() and c not in " ." else "_" for c in Path(p).stem)[: MAX_STREAM_ID - 4]
        seen[stem] = seen.get(stem, 0) + 1
        ids.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return ids


def spec_kind(spec: str) -> str:
    """What a `--source` spec names: `stdin` (-), `mic` (mic[:DEVICE]), `ingest` (pull:ADDR,
    sub:ADDR), `wyoming` (wyoming:tcp://HOST:PORT) or `file` (anything else)."""
    if spec == "-":
        return "stdin"
    if spec == "mic" or spec.startswith("mic:"):
        return "mic"
    if spec.startswith("wyoming:"):
        return "wyoming"
    return "ingest" if spec.startswith(("pull:", "sub:")) else "file"


def open_wyoming(spec: str, config, models) -> Source:
    """The Wyoming server of a `wyoming:tcp://HOST:PORT` spec (binding checked), describing
    `models()`; ValueError names the spec when the wyoming package is missing."""
    try:
        from streamrnn.service.sources.wyoming import WyomingSource
    except ImportError:
        raise ValueError(
            f"source {spec}: needs the wyoming package: pip install '.[wyoming]' in the streamrnn clone"
        ) from None
    return WyomingSource(spec.partition(":")[2], models, config.ingest, config.wyoming)


def open_source(spec: str, config, context=None, keys=None, models=list, stream: str = "") -> Source:
    """The source of one `--source` spec: FILE (stream id `stream`, default the spec), `-` (stdin),
    `mic[:DEVICE]`, `pull:ADDR`, `sub:ADDR` (on `context`, with CURVE `keys`) or
    `wyoming:tcp://HOST:PORT` (which describes `models()`, the infos of the models served now).
    Each kind's modules are imported only when it is used (sounddevice, libsndfile, wyoming)."""
    kind = spec_kind(spec)
    if kind == "stdin":
        from streamrnn.service.sources.stdin import StdinSource

        return StdinSource(config.stdin_rate)
    if kind == "mic":
        from streamrnn.service.sources.mic import MicSource

        return MicSource(spec.partition(":")[2], config.mic)
    if kind == "wyoming":
        return open_wyoming(spec, config, models)
    if kind == "ingest":
        from streamrnn.service.sources.ingest import IngestSource

        socket_type, _, address = spec.partition(":")
        return IngestSource(context, socket_type, address, config.ingest, keys)
    from streamrnn.service.sources.file import FileSource

    return FileSource(spec, stream or spec, realtime=not config.fast)


def open_sources(specs: list[str], config, context, keys=None, models=list) -> list[Source]:
    """The sources of every spec (see `open_source`), files given unique stream ids; if one fails,
    those opened before it are closed."""
    sources: list[Source] = []
    files = [s for s in specs if spec_kind(s) == "file"]
    file_ids = dict(zip(files, unique_stream_ids(files)))
    try:
        for spec in specs:
            sources.append(open_source(spec, config, context, keys, models, file_ids.get(spec, "")))
    except Exception:
        for source in sources:
            source.close()
        raise
    return sources
