"""ZeroMQ ingest: remote microphones and sensors push frames to a bound PULL (or SUB) socket.

Each message has three parts: the stream id (UTF-8), a JSON header, the raw samples (the format
is in streamrnn.wire, which reads it). New ids start streams; seq 0 on a known id starts it over; streams idle
past `idle_timeout` end. Malformed messages are counted and dropped; sequence gaps are counted.
"""

from __future__ import annotations

import threading
import time

import zmq

from streamrnn.service.publisher import bind
from streamrnn.service.sources import Emit, Problem, Samples, Source, StreamEnd
from streamrnn.wire import Reject, parse_ingest

POLL_MS = 50


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
                    stream, header, samples = parse_ingest(parts, self.config.max_rate)
                    seq = header.seq
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
                emit(Samples(stream, samples, header.rate, header.kind))
                if header.end:
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
