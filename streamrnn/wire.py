"""The events on the wire, written and read here only (plain Python: a subscriber needs no numpy).

Events: typed records (`DetectionEvent`, `ScoresEvent`, `HeartbeatEvent`, `StatusEvent`) whose
JSON objects the service publishes ([topic, JSON]) and `streamrnn detect` prints. Every event
carries the same keys (null where they do not apply), then its kind's own keys. The schema is
`streamrnn/event.schema.json` (a test checks it against these records); topics allow prefix
filtering by kind and stream.
What senders push is in `streamrnn.ingest_format`.
"""

from __future__ import annotations

import itertools
import json
import types
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, get_args, get_origin, get_type_hints

from streamrnn.contract import ModelInfo

if TYPE_CHECKING:
    from collections.abc import Sequence

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
    def of(cls, stream: str, info: ModelInfo, end: float, scores: Sequence[float]) -> ScoresEvent:
        values = [float(v) for v in scores]
        top = max(range(len(values)), key=values.__getitem__)
        return cls(
            stream=stream,
            model=info.name,
            model_version=info.version,
            label=info.labels[top],
            score=round(values[top], 6),
            end=round(end, 4),
            scores={label: round(v, 5) for label, v in zip(info.labels, values)},
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
