"""ZeroMQ ingest: remote microphones and sensors push frames to a bound PULL (or SUB) socket.

Each message has three parts: the stream id (UTF-8), a JSON header, the raw samples.
Header: `format` (`s16le` | `f32le`), `rate` (Hz), `channels` (default 1), `seq` (per-stream
counter), optional `kind` (`audio` | `sensor`, default audio) and `end` (true: the stream ends
after these samples). New ids start streams; seq 0 on a known id starts it over; streams idle
past `idle_timeout` end. Malformed messages are counted and dropped; sequence gaps are counted.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import zmq

from streamrnn.service.publisher import bind
from streamrnn.service.sources import Emit, Problem, Samples, Source, StreamEnd

FORMATS = {"s16le": ("<i2", 1 / 32768.0), "f32le": ("<f4", 1.0)}
MAX_CHANNELS = 64
POLL_MS = 50


class Reject(Exception):
    def __init__(self, counter: str, message: str):
        super().__init__(message)
        self.counter = counter


def parse(parts: list[bytes], max_rate: float) -> tuple[str, dict, np.ndarray]:
    """Validate one ingest message -> (stream, header, samples float32 [n] or [n, channels])."""
    if len(parts) != 3:
        raise Reject("ingest_bad_parts", f"message has {len(parts)} parts, expected 3")
    try:
        stream = parts[0].decode()
    except UnicodeDecodeError:
        raise Reject("ingest_bad_stream", "stream id is not UTF-8") from None
    if not stream or len(stream) > 200 or any(c in stream for c in " \t\r\n"):
        raise Reject("ingest_bad_stream", f"stream id {stream[:40]!r} is empty, long or has spaces")
    try:
        header = json.loads(parts[1])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise Reject("ingest_bad_header", f"stream {stream}: header is not JSON") from None
    if not isinstance(header, dict):
        raise Reject("ingest_bad_header", f"stream {stream}: header is not a JSON object")
    fmt, rate = header.get("format"), header.get("rate")
    channels, seq = header.get("channels", 1), header.get("seq")
    kind = header.get("kind", "audio")
    if fmt not in FORMATS:
        raise Reject("ingest_bad_format", f"stream {stream}: unknown format {fmt!r} (s16le, f32le)")
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 1 <= rate <= max_rate:
        raise Reject("ingest_bad_rate", f"stream {stream}: rate {rate!r} is not within [1, {max_rate:g}]")
    if not isinstance(channels, int) or not 1 <= channels <= MAX_CHANNELS:
        raise Reject("ingest_bad_channels", f"stream {stream}: channels {channels!r} is not within [1, {MAX_CHANNELS}]")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise Reject("ingest_bad_seq", f"stream {stream}: seq {seq!r} is not a counter")
    if kind not in ("audio", "sensor"):
        raise Reject("ingest_bad_kind", f"stream {stream}: kind {kind!r} (audio, sensor)")
    dtype, scale = FORMATS[fmt]
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


class IngestSource(Source):
    finite = False

    def __init__(self, context: zmq.Context, kind: str, address: str, config):
        self.name = f"{kind}:{address}"
        self.config = config
        self.socket = context.socket(zmq.PULL if kind == "pull" else zmq.SUB)
        if kind == "sub":
            self.socket.setsockopt(zmq.SUBSCRIBE, b"")
        bind(self.socket, address, "ingest")

    def run(self, emit: Emit, stop: threading.Event) -> None:
        last_seq: dict[str, int] = {}
        last_seen: dict[str, float] = {}
        while not stop.is_set():
            if self.socket.poll(POLL_MS):
                parts = self.socket.recv_multipart()
                try:
                    stream, header, samples = parse(parts, self.config.max_rate)
                    seq = header["seq"]
                    if stream in last_seq and seq == 0:  # the sender started over: a new stream
                        emit(Problem("streams_restarted", f"stream {stream}: seq 0 again, restarted", stream))
                        emit(StreamEnd(stream))
                        del last_seq[stream], last_seen[stream]
                    elif stream in last_seq and seq <= last_seq[stream]:
                        raise Reject("ingest_seq_backwards", f"stream {stream}: seq {seq} after {last_seq[stream]}")
                except Reject as r:
                    emit(Problem(r.counter, str(r)))
                    continue
                if stream in last_seq and seq > last_seq[stream] + 1:
                    emit(
                        Problem(
                            "ingest_seq_gaps",
                            f"stream {stream}: {seq - last_seq[stream] - 1} message(s) missing before seq {seq}",
                            stream,
                        )
                    )
                last_seq[stream], last_seen[stream] = seq, time.monotonic()
                emit(Samples(stream, samples, float(header["rate"]), header.get("kind", "audio")))
                if header.get("end") is True:
                    emit(StreamEnd(stream))
                    del last_seq[stream], last_seen[stream]
            now = time.monotonic()
            for stream in [s for s, t in last_seen.items() if now - t > self.config.idle_timeout]:
                emit(
                    Problem(
                        "streams_expired", f"stream {stream}: idle for {self.config.idle_timeout:g} s, expired", stream
                    )
                )
                emit(StreamEnd(stream))
                del last_seq[stream], last_seen[stream]

    def close(self) -> None:
        self.socket.close(linger=0)
