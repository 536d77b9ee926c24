"""Offline text-to-speech as training material: many voices of espeak-ng and flite.

Synthetic clips only ever train (they never enter validation or test); quality is reported on
real recordings.
"""

from __future__ import annotations

import io
import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from streamrnn.audio import to_mono, to_model_rate
from streamrnn.datasets import DataError

ESPEAK_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan",
                  "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")


@dataclass(frozen=True)
class Voice:
    engine: str      # espeak-ng | flite
    name: str        # espeak: accent+variant; flite: voice
    speed: int       # espeak words per minute; flite duration stretch in percent
    pitch: int       # espeak pitch 0-99 (flite: unused)

    @property
    def key(self) -> str:
        return f"{self.engine}:{self.name}:{self.speed}:{self.pitch}"


def _espeak_variants() -> list[str]:
    listing = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=True)
    return sorted(line.split()[4].split("/", 1)[1] for line in listing.stdout.splitlines()[1:]
                  if len(line.split()) >= 5 and line.split()[4].startswith("!v/"))


def voices(engines: list[str], count: int, seed: int) -> list[Voice]:
    """`count` distinct voices drawn with a fixed seed from the installed engines."""
    missing = [e for e in engines if shutil.which(e) is None]
    if missing:
        raise DataError(f"synth: {', '.join(missing)} not installed (Debian: apt-get install espeak-ng flite)")
    rng = random.Random(seed)
    variants = _espeak_variants() if "espeak-ng" in engines else []
    chosen: dict[str, Voice] = {}
    for _ in range(count * 20):
        if len(chosen) == count:
            break
        engine = rng.choice(engines)
        if engine == "espeak-ng":
            name = f"{rng.choice(ESPEAK_ACCENTS)}+{rng.choice(variants)}" if variants else rng.choice(ESPEAK_ACCENTS)
            voice = Voice(engine, name, rng.randint(110, 210), rng.randint(15, 85))
        else:
            voice = Voice(engine, rng.choice(FLITE_VOICES), rng.randint(80, 130), 0)
        chosen.setdefault(voice.key, voice)
    return list(chosen.values())


def speak(text: str, voice: Voice, rate: int) -> np.ndarray:
    """`text` in `voice` as mono float32 at `rate` Hz."""
    if voice.engine == "espeak-ng":
        wav = subprocess.run(["espeak-ng", "-v", voice.name, "-s", str(voice.speed), "-p", str(voice.pitch),
                              "--stdout", text], capture_output=True, check=True).stdout
        samples, file_rate = soundfile.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    else:
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "x.wav"
            subprocess.run(["flite", "-voice", voice.name, "--setf", f"duration_stretch={voice.speed / 100}",
                            "-t", text, "-o", str(out)], capture_output=True, check=True)
            samples, file_rate = soundfile.read(out, dtype="float32", always_2d=True)
    samples = to_model_rate(to_mono(samples), file_rate, rate)
    peak = float(np.abs(samples).max()) or 1.0
    return samples * (0.7 / peak)


def synth_clips(phrases: dict[str, str], per_label: int, engines: list[str], rate: int,
                seed: int) -> list[tuple[np.ndarray, str, str]]:
    """(samples, label, voice key) for each label's phrase in `per_label` voices."""
    clips = []
    for i, (label, text) in enumerate(sorted(phrases.items())):
        for voice in voices(engines, per_label, seed * 1000 + i):
            clips.append((speak(text, voice, rate), label, f"synth:{voice.key}"))
    return clips
