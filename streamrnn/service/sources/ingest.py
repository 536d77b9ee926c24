"""ZeroMQ ingest: remote microphones and sensors push frames to a bound PULL (or SUB) socket.

Each message has three parts: the stream id (UTF-8), a JSON header, the raw samples (the format
is in streamrnn.wire, which reads it). New ids start streams; seq 0 on a known id starts it over;
streams idle past `idle_timeout` end. Every message that cannot be used is counted and dropped:
malformed ones, ones over the limits of `[ingest]` (message size, live streams, speed), and any
that fails in a way nobody foresaw; sequence gaps are counted. Speed is held per stream and per
sender (the peer ZeroMQ names: an IP address, or a local process), so a sender that starts stream
after stream gets no fresh credit with each.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import zmq

from streamrnn.addresses import bind, rebind
from streamrnn.ingest_format import Reject, parse_ingest
from streamrnn.keys import ServerKeys
from streamrnn.service.sources import Emit, Problem, Samples, Source, SpeedCredit, StreamEnd

POLL_MS = 50


@dataclass
class _Remote:
    """A live remote stream: its last seq and what it may still send (`credit.seen`: when it was
    last heard)."""

    seq: int
    credit: SpeedCredit


class IngestSource(Source):
    finite = False

    def __init__(self, context: zmq.Context, kind: str, address: str, config, keys: ServerKeys | None = None):
        self.name = f"{kind}:{address}"
        self.config = config
        self.socket = context.socket(zmq.PULL if kind == "pull" else zmq.SUB)
        if keys:
            keys.apply(self.socket)
        if kind == "sub":
            self.socket.setsockopt(zmq.SUBSCRIBE, b"")
        bind(self.socket, address, "ingest")
        self.streams: dict[str, _Remote] = {}
        self.senders: dict[str, SpeedCredit] = {}  # by peer address
        self.address = address
        self._reconnect = threading.Event()  # set by the loop, acted on in run's thread

    def reconnect_all(self) -> None:
        self._reconnect.set()

    def run(self, emit: Emit, stop: threading.Event) -> None:
        while not stop.is_set():
            if self._reconnect.is_set():  # a ZeroMQ socket is used by one thread only: this one
                self._reconnect.clear()
                rebind(self.socket, self.address, "ingest")
            if self.socket.poll(POLL_MS):
                frames = self.socket.recv_multipart(copy=False)
                try:
                    self._take([f.bytes for f in frames], frames[0].get("Peer-Address") or "", emit)
                except Reject as r:
                    emit(Problem(r.counter, str(r)))
                except Exception as exc:  # one message never ends ingest for every sender
                    emit(Problem("ingest_failures", f"{self.name}: a message failed: {type(exc).__name__}: {exc}"))
            now = time.monotonic()
            for stream in [s for s, r in self.streams.items() if now - r.credit.seen > self.config.idle_timeout]:
                emit(
                    Problem(
                        "streams_expired", f"stream {stream}: idle for {self.config.idle_timeout:g} s, expired", stream
                    )
                )
                self._end(stream, emit)
            for sender in [p for p, c in self.senders.items() if now - c.seen > self.config.idle_timeout]:
                del self.senders[sender]  # refilled long ago: nothing to remember

    def _take(self, parts: list[bytes], sender: str, emit: Emit) -> None:
        stream, header, samples = parse_ingest(parts, self.config)
        remote = self.streams.get(stream)
        if remote is not None and header.seq == 0:  # the sender started over: a new stream
            emit(Problem("streams_restarted", f"stream {stream}: seq 0 again, restarted", stream))
            self._end(stream, emit)
            remote = None
        if remote is None:
            if len(self.streams) >= self.config.max_streams:
                raise Reject(
                    "ingest_too_many_streams",
                    f"stream {stream}: {len(self.streams)} streams are live (ingest.max_streams); not started",
                )
            credit = SpeedCredit(self.config.max_speed, self.config.burst_seconds)
            remote = self.streams[stream] = _Remote(header.seq - 1, credit)
        elif header.seq <= remote.seq:
            raise Reject("ingest_seq_backwards", f"stream {stream}: seq {header.seq} after {remote.seq}")
        elif header.seq > remote.seq + 1:
            emit(
                Problem(
                    "ingest_seq_gaps",
                    f"stream {stream}: {header.seq - remote.seq - 1} message(s) missing before seq {header.seq}",
                    stream,
                )
            )
        remote.seq = header.seq
        seconds = len(samples) / header.rate
        credit = self.senders.setdefault(sender, SpeedCredit(self.config.sender_speed, self.config.sender_burst))
        if not remote.credit.take(seconds) or not credit.take(seconds):
            if header.end:  # the samples are dropped, the end is kept
                self._end(stream, emit)
            raise Reject(
                "ingest_over_speed",
                f"stream {stream}: faster than {self.config.max_speed:g}x real time (ingest.max_speed), or its "
                f"sender {sender or '(unknown)'} than {self.config.sender_speed:g} s/s (ingest.sender_speed); dropped",
            )
        emit(Samples(stream, samples, header.rate, header.kind, start=header.start))
        if header.end:
            self._end(stream, emit)

    def _end(self, stream: str, emit: Emit) -> None:
        del self.streams[stream]
        emit(StreamEnd(stream))

    def close(self) -> None:
        self.socket.close(linger=0)
