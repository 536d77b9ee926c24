"""Every message on the wire, written and read here only.

Events: the JSON objects the service publishes ([topic, JSON]) and `streamrnn detect` prints.
Every event carries the same keys (null where they do not apply), then its kind's own keys. The
schema is `streamrnn/event.schema.json`; topics allow prefix filtering by kind and stream.

Ingest: what senders push ([stream id, JSON header, samples]). Header: `format` (`s16le` |
`f32le`), `rate` (Hz), `channels` (default 1), `seq` (per-stream counter), optional `kind`
(`audio` | `sensor`, default audio) and `end` (true: the stream ends after these samples).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from streamrnn.contract import ModelInfo
from streamrnn.decision import Detection

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("event.schema.json")
COMMON_KEYS = ("schema", "kind", "stream", "model", "model_version", "label", "score", "start", "end")


def _event(kind: str, **fields) -> dict:
    event = dict.fromkeys(COMMON_KEYS)
    event.update(schema=SCHEMA_VERSION, kind=kind, **fields)
    return event


def detection_event(stream: str, info: ModelInfo, detection: Detection) -> dict:
    """A detection as an unstamped event (no `time`/`seq` yet)."""
    return _event(
        "detection",
        stream=stream,
        model=info.name,
        model_version=info.version,
        label=detection.label,
        score=round(detection.score, 6),
        start=round(detection.start, 4),
        end=round(detection.end, 4),
    )


def scores_event(stream: str, info: ModelInfo, end: float, scores: np.ndarray) -> dict:
    """One frame's scores of a stream: the top label and every label's probability."""
    top = int(np.argmax(scores))
    return _event(
        "scores",
        stream=stream,
        model=info.name,
        model_version=info.version,
        label=info.labels[top],
        score=round(float(scores[top]), 6),
        end=round(end, 4),
        scores=dict(zip(info.labels, np.round(scores.astype(float), 5).tolist())),
    )


def heartbeat_event(stats: dict) -> dict:
    return _event("heartbeat", **stats)


def status_event(state: str, message: str, stats: dict) -> dict:
    return _event("status", state=state, message=message, **stats)


def topic(event: dict) -> str:
    """`detection.<stream>.<label>`, `scores.<stream>`, `status`, `heartbeat`."""
    kind = event["kind"]
    if kind == "detection":
        return f"detection.{event['stream']}.{event['label']}"
    if kind == "scores":
        return f"scores.{event['stream']}"
    return kind


def encode(event: dict) -> list[bytes]:
    """The wire form: multipart [topic, JSON]."""
    return [topic(event).encode(), json.dumps(event, separators=(",", ":")).encode()]


def decode(parts: list[bytes]) -> tuple[str, dict] | None:
    """(topic, event) of a published message; None for one that is not [topic, JSON object]."""
    if len(parts) != 2:
        return None
    try:
        event = json.loads(parts[1])
        return (parts[0].decode(), event) if isinstance(event, dict) else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


class Stamper:
    """Gives each event the wall-clock `time` and this publisher's next `seq` number."""

    def __init__(self):
        self._seq = itertools.count()

    def stamp(self, event: dict) -> dict:
        return {**event, "time": datetime.now(UTC).isoformat(timespec="milliseconds"), "seq": next(self._seq)}


# ----- ingest -----------------------------------------------------------------------------

INGEST_FORMATS = {"s16le": ("<i2", 1 / 32768.0), "f32le": ("<f4", 1.0)}  # dtype, scale to [-1, 1]
KINDS = ("audio", "sensor")
MAX_CHANNELS = 64
MAX_STREAM_ID = 200  # characters


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
    if header.format == "s16le":
        payload = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    else:
        payload = samples.astype("<f4").tobytes()
    return [stream.encode(), header.encode(), payload]


def parse_ingest(parts: list[bytes], max_rate: float) -> tuple[str, IngestHeader, np.ndarray]:
    """Validate one ingest message -> (stream, header, samples float32 [n] or [n, channels]);
    raises Reject saying what is wrong."""
    if len(parts) != 3:
        raise Reject("ingest_bad_parts", f"message has {len(parts)} parts, expected 3")
    try:
        stream = parts[0].decode()
    except UnicodeDecodeError:
        raise Reject("ingest_bad_stream", "stream id is not UTF-8") from None
    if not stream or len(stream) > MAX_STREAM_ID or any(c in stream for c in " \t\r\n"):
        raise Reject("ingest_bad_stream", f"stream id {stream[:40]!r} is empty, long or has spaces")
    try:
        fields = json.loads(parts[1])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise Reject("ingest_bad_header", f"stream {stream}: header is not JSON") from None
    if not isinstance(fields, dict):
        raise Reject("ingest_bad_header", f"stream {stream}: header is not a JSON object")
    fmt, rate = fields.get("format"), fields.get("rate")
    channels, seq = fields.get("channels", 1), fields.get("seq")
    kind, end = fields.get("kind", "audio"), fields.get("end") is True
    if fmt not in INGEST_FORMATS:
        raise Reject("ingest_bad_format", f"stream {stream}: unknown format {fmt!r} (s16le, f32le)")
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 1 <= rate <= max_rate:
        raise Reject("ingest_bad_rate", f"stream {stream}: rate {rate!r} is not within [1, {max_rate:g}]")
    if not isinstance(channels, int) or not 1 <= channels <= MAX_CHANNELS:
        raise Reject("ingest_bad_channels", f"stream {stream}: channels {channels!r} is not within [1, {MAX_CHANNELS}]")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise Reject("ingest_bad_seq", f"stream {stream}: seq {seq!r} is not a counter")
    if kind not in KINDS:
        raise Reject("ingest_bad_kind", f"stream {stream}: kind {kind!r} (audio, sensor)")
    header = IngestHeader(fmt, float(rate), seq, channels, kind, end)
    dtype, scale = INGEST_FORMATS[fmt]
    frame_bytes = np.dtype(dtype).itemsize * channels
    if len(parts[2]) % frame_bytes:
        raise Reject(
            "ingest_odd_bytes",
            f"stream {stream}: {len(parts[2])} bytes is not a whole number of {channels}-channel {fmt} samples",
        )
    samples = np.frombuffer(parts[2], dtype=dtype).astype(np.float32) * np.float32(scale)
    if not np.isfinite(samples).all():
        raise Reject("ingest_not_finite", f"stream {stream}: samples hold NaN or infinity")
    if channels > 1 or kind == "sensor":
        samples = samples.reshape(-1, channels)
    return stream, header, samples
