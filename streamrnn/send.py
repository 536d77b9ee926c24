"""`streamrnn send`: the reference ingest client. Pushes a file's samples to a service.

Audio files go as mono s16le; CSV files (a row per time step, a column per channel) go as f32le
sensor frames at `--rate`. Each message: [stream id, JSON header, samples].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zmq

from streamrnn.addresses import for_address
from streamrnn.audio import read_native
from streamrnn.ingest_format import IngestHeader, ingest_message, stream_id_problem
from streamrnn.keys import ClientKeys
from streamrnn.pacing import Pacer
from streamrnn.sensors import read_csv


class SendError(ValueError):
    """The messages could not be handed to a service; the message says where and why."""


def read_frames(path: str, rate: float | None) -> tuple[np.ndarray, float, str]:
    """(samples, rate, kind) of an audio file or a sensor CSV."""
    if path.endswith(".csv"):
        if not rate:
            raise ValueError(f"{path}: a CSV of sensor frames needs --rate")
        return read_csv(Path(path)), rate, "sensor"
    samples, file_rate = read_native(path)
    return samples, file_rate, "audio"


def messages(stream: str, samples: np.ndarray, rate: float, kind: str, block_seconds: float):
    """The multipart messages for one stream, the last marked `end`, each with its seconds."""
    block = max(1, int(rate * block_seconds))
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    count = max(1, -(-len(samples) // block))
    for seq in range(count):
        piece = samples[seq * block : (seq + 1) * block]
        fmt = "s16le" if kind == "audio" else "f32le"
        header = IngestHeader(fmt, rate, seq, channels, kind, seq == count - 1, seq * block / rate)
        yield ingest_message(stream, header, piece), len(piece) / rate


def send(
    path: str,
    address: str,
    stream: str,
    realtime: bool = True,
    rate: float | None = None,
    block_seconds: float = 0.02,
    keys: ClientKeys | None = None,
    timeout: float = 5.0,
) -> int:
    """Send one file as one stream (as a CURVE client with `keys`); returns the number of messages
    sent. Messages go only to a connected service; raises SendError when none takes one within
    `timeout` seconds (nothing listening, a wrong address, keys it refuses)."""
    if problem := stream_id_problem(stream):
        raise ValueError(f"stream id {stream!r} {problem}")
    samples, rate, kind = read_frames(path, rate)
    socket: zmq.Socket = zmq.Context.instance().socket(zmq.PUSH)
    socket.setsockopt(zmq.LINGER, int(timeout * 1000))
    socket.setsockopt(zmq.IMMEDIATE, 1)  # queue for connected peers only: an absent service is noticed
    socket.setsockopt(zmq.SNDTIMEO, int(timeout * 1000))
    if keys:
        keys.apply(socket)
    for_address(socket, address).connect(address)
    pacer, count = Pacer(), 0
    try:
        for parts, seconds in messages(stream, samples, rate, kind, block_seconds):
            if realtime:
                pacer.wait(seconds)
            try:
                socket.send_multipart(parts)
            except zmq.Again:
                raise SendError(
                    f"{address}: nothing took the messages within {timeout:g} s (is a service bound there, "
                    "with a matching key?)"
                ) from None
            count += 1
    finally:
        socket.close()
    return count
