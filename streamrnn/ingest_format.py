"""Ingest messages, what remote senders push: [stream id, JSON header, samples], written and read here only.

Header: `format` (`s16le` | `f32le`), `rate` (Hz), `channels` (default 1), `seq` (per-stream
counter), optional `kind` (`audio` | `sensor`, default audio) and `end` (true: the stream ends
after these samples).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from streamrnn.audio import MIN_AUDIO_RATE
from streamrnn.contract import KINDS

INGEST_FORMATS = {"s16le": ("<i2", 1 / 32768.0), "f32le": ("<f4", 1.0)}  # dtype, scale to [-1, 1]
MAX_CHANNELS = 64
MAX_STREAM_ID = 200  # characters
MAX_HEADER_BYTES = 4096
MAX_START = 10 * 365 * 86400.0  # seconds: a `start` beyond ten years is no stream clock


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
    min_audio_rate: float = MIN_AUDIO_RATE  # Hz; audio below this is refused
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
    start: float | None = None  # stream seconds of the first sample, as the sender counts them

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
        if self.start is not None:
            fields["start"] = self.start
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
    kind, end, start = fields.get("kind", "audio"), fields.get("end") is True, fields.get("start")
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
    if start is not None and (
        not isinstance(start, (int, float)) or isinstance(start, bool) or not 0 <= start <= MAX_START
    ):
        raise Reject("ingest_bad_start", f"stream {stream}: start {str(start)[:20]} is not within [0, {MAX_START:g}] s")
    return IngestHeader(fmt, float(rate), seq, channels, kind, end, None if start is None else float(start))
