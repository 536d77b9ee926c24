"""Reading audio files and converting them to what a model expects (mono float32 at its rate)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import soxr


class AudioError(ValueError):
    """Audio that cannot be read or used; the message names the input and the fault."""


class EmptyAudio(AudioError):
    """A well-formed audio file with no samples (collections of recordings hold a few)."""


def to_model_rate(samples: np.ndarray, rate: float, model_rate: float) -> np.ndarray:
    """Resample float32 samples ([n] or [n, channels]) with soxr; a no-op at the same rate."""
    if rate == model_rate:
        return samples
    return soxr.resample(samples, rate, model_rate).astype(np.float32, copy=False)


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Average the channels of [n, channels] samples."""
    return samples.mean(axis=1, dtype=np.float32) if samples.ndim == 2 else samples


MIN_AUDIO_RATE = 4000.0  # Hz: audio below it is refused (1 Hz would be upsampled 16,000-fold)


def audio_problem(path: str | Path, rate: float) -> str | None:
    """Why an audio file at `rate` Hz cannot be used, or None."""
    if rate < MIN_AUDIO_RATE:
        return f"{path}: {rate:g} Hz is below {MIN_AUDIO_RATE:g} Hz, too slow to be audio"
    return None


def read_native(path: str | Path) -> tuple[np.ndarray, float]:
    """A wav/flac/ogg file as mono float32 in [-1, 1] at its own rate: (samples, rate)."""
    import soundfile  # here, not above: a service without file input never loads libsndfile (3 MB)

    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioError(f"{path}: cannot read audio ({exc})") from None
    if len(samples) == 0:
        raise EmptyAudio(f"{path}: holds no samples")
    if problem := audio_problem(path, rate):
        raise AudioError(problem)
    if not np.isfinite(samples).all():
        raise AudioError(f"{path}: {int((~np.isfinite(samples)).sum())} sample(s) are NaN or infinity")
    return to_mono(samples), float(rate)


def read_audio(path: str | Path, rate: float) -> np.ndarray:
    """A wav/flac/ogg file as mono float32 in [-1, 1] at `rate` Hz (several channels averaged,
    other rates resampled with soxr)."""
    samples, file_rate = read_native(path)
    return to_model_rate(samples, file_rate, rate)


def read_many(paths: list[Path], rate: float) -> dict[Path, np.ndarray]:
    """Several files as by `read_audio`, by path; empty ones are left out and counted on stderr."""
    audio, empty = {}, []
    for path in paths:
        try:
            audio[path] = read_audio(path, rate)
        except EmptyAudio:
            empty.append(path)
    if empty:
        print(f"streamrnn: skipped {len(empty)} empty audio file(s), e.g. {empty[0]}", file=sys.stderr)
    return audio
