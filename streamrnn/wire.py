"""Every message on the wire, written and read here only.

Events: typed records (`DetectionEvent`, `ScoresEvent`, `HeartbeatEvent`, `StatusEvent`) whose
JSON objects the service publishes ([topic, JSON]) and `streamrnn detect` prints. Every event
carries the same keys (null where they do not apply), then its kind's own keys. The schema is
`streamrnn/event.schema.json` (a test checks it against these records); topics allow prefix
filtering by kind and stream.

Ingest: what senders push ([stream id, JSON header, samples]). Header: `format` (`s16le` |
`f32le`), `rate` (Hz), `channels` (default 1), `seq` (per-stream counter), optional `kind`
(`audio` | `sensor`, default audio) and `end` (true: the stream ends after these samples).
"""

from __future__ import annotations

import itertools
import json
import types
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar, get_args, get_origin, get_type_hints

import numpy as np

from streamrnn.contract import KINDS, ModelInfo
from streamrnn.decision import Detection

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("event.schema.json")


class BadEvent(ValueError):
    """A published message that is not an event of this schema; the message says what is wrong."""


@dataclass(frozen=True, kw_only=True)
class Event:
    """The keys every event carries (None where they do not apply); `time` and `seq` are given
    by the publisher (`Stamper`)."""

    kind: ClassVar[str]
    stream: str | None = None
    model: str | None = None
    model_version: str | None = None
    label: str | None = None
    score: float | None = None
    start: float | None = None
    end: float | None = None
    time: str | None = None
    seq: int | None = None
    instance: str | None = None  # which service published it (`seq` counts per instance)

    def topic(self) -> str:
        """`detection.<stream>.<label>`, `scores.<stream>`, `status`, `heartbeat`."""
        return self.kind

    def to_dict(self) -> dict:
        """The JSON object: `schema`, `kind`, then every field."""
        return {"schema": SCHEMA_VERSION, "kind": self.kind} | {f.name: getattr(self, f.name) for f in fields(self)}

    def encode(self) -> list[bytes]:
        """The wire form: multipart [topic, JSON]."""
        return [self.topic().encode(), json.dumps(self.to_dict(), separators=(",", ":")).encode()]


@dataclass(frozen=True, kw_only=True)
class _StreamEvent(Event):
    """An event of one stream and model: these common fields are required (a redeclared field
    with `field()` has no default)."""

    stream: str = field()
    model: str = field()
    model_version: str = field()
    label: str = field()
    score: float = field()
    end: float = field()


@dataclass(frozen=True, kw_only=True)
class DetectionEvent(_StreamEvent):
    """A word or gesture recognized in a stream."""

    kind: ClassVar[str] = "detection"
    start: float = field()

    @classmethod
    def of(cls, stream: str, info: ModelInfo, detection: Detection) -> DetectionEvent:
        return cls(
            stream=stream,
            model=info.name,
            model_version=info.version,
            label=detection.label,
            score=round(detection.score, 6),
            start=round(detection.start, 4),
            end=round(detection.end, 4),
        )

    def topic(self) -> str:
        return f"detection.{self.stream}.{self.label}"


@dataclass(frozen=True, kw_only=True)
class ScoresEvent(_StreamEvent):
    """One frame's scores of a stream: the top label and every label's probability."""

    kind: ClassVar[str] = "scores"
    scores: dict[str, float]

    @classmethod
    def of(cls, stream: str, info: ModelInfo, end: float, scores: np.ndarray) -> ScoresEvent:
        top = int(np.argmax(scores))
        return cls(
            stream=stream,
            model=info.name,
            model_version=info.version,
            label=info.labels[top],
            score=round(float(scores[top]), 6),
            end=round(end, 4),
            scores=dict(zip(info.labels, np.round(scores.astype(float), 5).tolist())),
        )

    def topic(self) -> str:
        return f"scores.{self.stream}"


@dataclass(frozen=True, kw_only=True)
class HeartbeatEvent(Event):
    """The service's counters, every `heartbeat` seconds."""

    kind: ClassVar[str] = "heartbeat"
    uptime: float
    streams: int
    frames: int
    events: int
    drops: int
    subscribers: int
    problems: dict[str, int]


@dataclass(frozen=True, kw_only=True)
class StatusEvent(HeartbeatEvent):
    """The counters with the service's state, its sources' states and its models."""

    kind: ClassVar[str] = "status"
    state: str
    message: str
    sources: dict[str, str]
    models: list[dict[str, str]]


EVENT_KINDS: dict[str, type[Event]] = {k.kind: k for k in (DetectionEvent, ScoresEvent, HeartbeatEvent, StatusEvent)}
_FIELD_TYPES = {kind: get_type_hints(kind) for kind in EVENT_KINDS.values()}


def _fits(value: object, hint: object) -> bool:
    """Whether a JSON value has a field's type (float takes an int; containers by their kind)."""
    if isinstance(hint, types.UnionType):
        return any(_fits(value, h) for h in get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    kind = get_origin(hint) or hint
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))  # type: ignore[arg-type]


def parse_event(obj: object) -> Event:
    """The typed event of a decoded JSON object; raises BadEvent saying what is wrong. Keys this
    schema version does not know are ignored (a newer service may add some)."""
    if not isinstance(obj, dict):
        raise BadEvent(f"event is a JSON {type(obj).__name__}, not an object")
    if obj.get("schema") != SCHEMA_VERSION:
        raise BadEvent(f"event schema {obj.get('schema')!r} is not {SCHEMA_VERSION}")
    kind = EVENT_KINDS.get(obj.get("kind"))  # type: ignore[arg-type]
    if kind is None:
        raise BadEvent(f"event kind {obj.get('kind')!r} is not one of {', '.join(EVENT_KINDS)}")
    hints = _FIELD_TYPES[kind]
    for f in fields(kind):
        if f.name in obj and not _fits(obj[f.name], hint := hints[f.name]):
            name = hint.__name__ if isinstance(hint, type) else str(hint)
            raise BadEvent(f"{kind.kind} event: {f.name} {str(obj[f.name])[:40]!r} is not {name}")
    try:
        return kind(**{f.name: obj[f.name] for f in fields(kind) if f.name in obj})
    except TypeError as exc:
        raise BadEvent(f"{kind.kind} event: {exc}") from None


def decode(parts: list[bytes]) -> tuple[str, Event]:
    """(topic, event) of a published message; raises BadEvent for one that is not [topic, event]."""
    if len(parts) != 2:
        raise BadEvent(f"message has {len(parts)} parts, expected [topic, JSON]")
    try:
        return parts[0].decode(), parse_event(json.loads(parts[1]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadEvent(f"message is not a UTF-8 topic and a JSON event ({exc})") from None


def wall_time() -> str:
    """Now as events say it: wall-clock UTC, ISO 8601 to the millisecond."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Stamper:
    """Gives each event the wall-clock `time`, this publisher's next `seq` number and its `instance`."""

    def __init__(self, instance: str | None = None):
        self._seq = itertools.count()
        self._instance = instance

    def stamp(self, event: Event) -> Event:
        return replace(event, time=wall_time(), seq=next(self._seq), instance=self._instance)


# ----- ingest -----------------------------------------------------------------------------

INGEST_FORMATS = {"s16le": ("<i2", 1 / 32768.0), "f32le": ("<f4", 1.0)}  # dtype, scale to [-1, 1]
MAX_CHANNELS = 64
MAX_STREAM_ID = 200  # characters
MAX_HEADER_BYTES = 4096


def stream_id_problem(stream: str) -> str | None:
    """Why a stream id cannot be used, or None. Ids are topic parts (`detection.<stream>.<label>`)
    and log words: printable, no spaces, no dots, at most MAX_STREAM_ID characters."""
    if not stream or len(stream) > MAX_STREAM_ID:
        return f"is empty or longer than {MAX_STREAM_ID} characters"
    if not stream.isprintable() or " " in stream or "." in stream:
        return "holds a space, a dot or a control character"
    return None


@dataclass
class IngestLimits:
    """What one ingest message may be (the `[ingest]` table's message limits)."""

    max_rate: float = 384000.0  # Hz; higher rates are refused
    min_audio_rate: float = 4000.0  # Hz; audio below this is refused
    min_sensor_rate: float = 0.1  # Hz; sensor frames below this are refused
    max_message_bytes: int = 1 << 20  # bytes of samples in one message
    max_message_seconds: float = 10.0  # seconds of signal in one message


@dataclass(frozen=True)
class IngestHeader:
    """The JSON header of one ingest message."""

    format: str
    rate: float
    seq: int
    channels: int = 1
    kind: str = "audio"
    end: bool = False

    def encode(self) -> bytes:
        fields: dict = {
            "format": self.format,
            "rate": self.rate,
            "channels": self.channels,
            "seq": self.seq,
            "kind": self.kind,
        }
        if self.end:
            fields["end"] = True
        return json.dumps(fields).encode()


class Reject(Exception):
    """An ingest message that cannot be used; `counter` names the problem counter it goes to."""

    def __init__(self, counter: str, message: str):
        super().__init__(message)
        self.counter = counter


def ingest_message(stream: str, header: IngestHeader, samples: np.ndarray) -> list[bytes]:
    """One ingest message: samples (float32 in [-1, 1]; [n] or [n, channels]) in the header's format."""
    if header.format == "s16le":  # the inverse of parse_ingest's / 32768: 16-bit audio arrives bit-exact
        payload = np.clip(np.round(samples * 32768), -32768, 32767).astype("<i2").tobytes()
    else:
        payload = samples.astype("<f4").tobytes()
    return [stream.encode(), header.encode(), payload]


def parse_ingest(parts: list[bytes], limits: IngestLimits) -> tuple[str, IngestHeader, np.ndarray]:
    """Validate one ingest message -> (stream, header, samples float32 [n] or [n, channels]);
    raises Reject saying what is wrong. Work is bounded by the limits before any is done."""
    if len(parts) != 3:
        raise Reject("ingest_bad_parts", f"message has {len(parts)} parts, expected 3")
    try:
        stream = parts[0].decode()
    except UnicodeDecodeError:
        raise Reject("ingest_bad_stream", "stream id is not UTF-8") from None
    if problem := stream_id_problem(stream):
        raise Reject("ingest_bad_stream", f"stream id {stream[:40]!r} {problem}")
    if len(parts[1]) > MAX_HEADER_BYTES:
        raise Reject(
            "ingest_bad_header", f"stream {stream}: header of {len(parts[1])} bytes (at most {MAX_HEADER_BYTES})"
        )
    if len(parts[2]) > limits.max_message_bytes:
        raise Reject(
            "ingest_too_large",
            f"stream {stream}: {len(parts[2])} bytes of samples (at most {limits.max_message_bytes})",
        )
    try:
        fields = json.loads(parts[1])
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, nested too deep, a 5,000-digit number
        raise Reject("ingest_bad_header", f"stream {stream}: header is not JSON ({str(exc)[:60]})") from None
    if not isinstance(fields, dict):
        raise Reject("ingest_bad_header", f"stream {stream}: header is not a JSON object")
    header = _header(stream, fields, limits)
    dtype, scale = INGEST_FORMATS[header.format]
    frame_bytes = np.dtype(dtype).itemsize * header.channels
    if len(parts[2]) % frame_bytes:
        raise Reject(
            "ingest_odd_bytes",
            f"stream {stream}: {len(parts[2])} bytes is not a whole number of {header.channels}-channel "
            f"{header.format} samples",
        )
    if len(parts[2]) // frame_bytes > limits.max_message_seconds * header.rate:
        raise Reject(
            "ingest_too_large",
            f"stream {stream}: {len(parts[2]) // frame_bytes} samples at {header.rate:g} Hz is more than "
            f"{limits.max_message_seconds:g} s",
        )
    samples = np.frombuffer(parts[2], dtype=dtype).astype(np.float32) * np.float32(scale)
    if not np.isfinite(samples).all():
        raise Reject("ingest_not_finite", f"stream {stream}: samples hold NaN or infinity")
    if header.channels > 1 or header.kind == "sensor":
        samples = samples.reshape(-1, header.channels)
    return stream, header, samples


def _header(stream: str, fields: dict, limits: IngestLimits) -> IngestHeader:
    fmt, rate = fields.get("format"), fields.get("rate")
    channels, seq = fields.get("channels", 1), fields.get("seq")
    kind, end = fields.get("kind", "audio"), fields.get("end") is True
    if not isinstance(fmt, str) or fmt not in INGEST_FORMATS:
        raise Reject("ingest_bad_format", f"stream {stream}: unknown format {str(fmt)[:20]!r} (s16le, f32le)")
    if not isinstance(kind, str) or kind not in KINDS:
        raise Reject("ingest_bad_kind", f"stream {stream}: kind {str(kind)[:20]!r} (audio, sensor)")
    low = limits.min_audio_rate if kind == "audio" else limits.min_sensor_rate
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not low <= rate <= limits.max_rate:
        raise Reject(
            "ingest_bad_rate",
            f"stream {stream}: {kind} rate {str(rate)[:20]} is not within [{low:g}, {limits.max_rate:g}]",
        )
    if not isinstance(channels, int) or isinstance(channels, bool) or not 1 <= channels <= MAX_CHANNELS:
        raise Reject(
            "ingest_bad_channels", f"stream {stream}: channels {str(channels)[:20]} is not within [1, {MAX_CHANNELS}]"
        )
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 2**63:
        raise Reject("ingest_bad_seq", f"stream {stream}: seq {str(seq)[:20]} is not a counter")
    return IngestHeader(fmt, float(rate), seq, channels, kind, end)
