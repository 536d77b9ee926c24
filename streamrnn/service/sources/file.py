"""Audio files (wav/flac/ogg): paced at real time, or as fast as the service takes them."""

from __future__ import annotations

import threading

import numpy as np
import soundfile

from streamrnn.audio import AudioError, audio_problem, to_mono
from streamrnn.pacing import Pacer
from streamrnn.service.sources import Emit, Problem, Samples, Source, StreamEnd

REALTIME_BLOCK = 0.01  # seconds per piece when paced like a live input
FAST_BLOCK = 1.0


class FileSource(Source):
    def __init__(self, path: str, stream: str, realtime: bool):
        self.name = f"file:{path}"
        self.stream = stream
        self.realtime = realtime
        try:
            info = soundfile.info(path)
        except (soundfile.LibsndfileError, RuntimeError, OSError) as exc:
            raise AudioError(f"source {path}: cannot read audio ({exc})") from None
        self.path, self.rate = path, float(info.samplerate)
        if problem := audio_problem(f"source {path}", self.rate):
            raise AudioError(problem)

    def run(self, emit: Emit, stop: threading.Event) -> None:
        block = int(self.rate * (REALTIME_BLOCK if self.realtime else FAST_BLOCK))
        pacer = Pacer(stop)
        try:
            with soundfile.SoundFile(self.path) as f:
                for piece in f.blocks(blocksize=block, dtype="float32", always_2d=True):
                    if stop.is_set() or (self.realtime and not pacer.wait(len(piece) / self.rate)):
                        return
                    if not np.isfinite(piece).all():  # counted, and heard as silence
                        bad = int((~np.isfinite(piece)).sum())
                        emit(Problem("file_not_finite", f"{self.name}: {bad} sample(s) NaN or infinity, set to 0"))
                        piece = np.nan_to_num(piece, nan=0.0, posinf=0.0, neginf=0.0)
                    emit(Samples(self.stream, to_mono(piece), self.rate))
        finally:
            emit(StreamEnd(self.stream))  # what was read gets scored, also when reading failed
