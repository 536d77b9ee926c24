"""Raw signed 16-bit little-endian mono PCM on standard input (`arecord -f S16_LE -c 1 | ...`)."""

from __future__ import annotations

import os
import sys
import threading

import numpy as np

from streamrnn.service.sources import Emit, Samples, Source, StreamEnd

BLOCK_SECONDS = 0.01


class StdinSource(Source):
    name = "stdin"

    def __init__(self, rate: int):
        self.rate = float(rate)
        self.fd = sys.stdin.fileno()

    def run(self, emit: Emit, stop: threading.Event) -> None:
        want = 2 * max(1, int(self.rate * BLOCK_SECONDS))
        carry = b""
        while not stop.is_set():
            data = os.read(self.fd, want)
            if not data:
                break
            data = carry + data
            usable = len(data) - len(data) % 2  # a sample split across reads waits for its other byte
            carry = data[usable:]
            if usable:
                pcm = np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / 32768.0
                emit(Samples("stdin", pcm, self.rate))
        emit(StreamEnd("stdin"))
