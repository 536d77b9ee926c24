"""Hard negatives for a wake word: real English words that sound like its phrase, found in a
pronouncing dictionary (CMUdict, as pocketsphinx ships it) rather than listed by hand.

A word is near a phrase by the edit distance between their phone strings (the phrase's words'
phones joined), relative to the phrase's length; words that hold a word of a phrase ("computers")
are never among them. Common words come first among equally near ones: those found in the
sentence texts the recipes speak (license texts, fortunes). `synth.near_word_texts` speaks each
alone and in a sentence.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path

from streamrnn.recipe.datasets import DataError

MAX_DISTANCE = 0.4  # edits per phone of the phrase


def dictionary_path() -> Path:
    """CMUdict as pocketsphinx (training extra) ships it."""
    import pocketsphinx

    return Path(pocketsphinx.get_model_path()) / "en-us" / "cmudict-en-us.dict"


@cache
def read_dictionary(path: Path) -> dict[str, list[tuple[str, ...]]]:
    """Word -> its pronunciations (tuples of ARPAbet phones); `word(2)` lines are the word's second."""
    found: dict[str, list[tuple[str, ...]]] = {}
    for line in path.read_text(errors="replace").splitlines():
        parts = line.split()
        if len(parts) >= 2:
            found.setdefault(re.sub(r"\(\d+\)$", "", parts[0]).lower(), []).append(tuple(parts[1:]))
    if not found:
        raise DataError(f"{path}: no pronunciations")
    return found


def distance(a: Sequence[str], b: Sequence[str]) -> int:
    """Levenshtein distance between two phone strings."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


def phrase_phones(phrase: str, words: dict[str, list[tuple[str, ...]]]) -> tuple[str, ...] | None:
    """The phrase's phones (each word's first pronunciation), or None if a word is not in the dictionary."""
    phones: list[str] = []
    for word in re.findall(r"[a-z']+", phrase.lower()):
        if word not in words:
            return None
        phones += words[word][0]
    return tuple(phones)


def near_words(phrase: str, avoid: Sequence[str], count: int, common: Iterable[str] = ()) -> list[str]:
    """Up to `count` dictionary words nearest `phrase` (at most MAX_DISTANCE edits per phone), none
    holding a word of `avoid`; the `common` words first among equally near ones. None where a word
    of the phrase is not in the dictionary (said on stderr by the caller)."""
    words = read_dictionary(dictionary_path())
    target = phrase_phones(phrase, words)
    if target is None:
        return []
    banned = [w.lower() for p in avoid for w in re.findall(r"[A-Za-z]+", p)]
    limit = MAX_DISTANCE * len(target)
    known = set(common)
    scored = []
    for word, pronunciations in words.items():
        if not word.isalpha() or any(word.startswith(b) for b in banned):
            continue
        fitting = [p for p in pronunciations if abs(len(p) - len(target)) <= limit]
        best = min((distance(p, target) for p in fitting), default=limit + 1)
        if best <= limit:
            scored.append((best, word not in known, word))
    return [word for *_, word in sorted(scored)[:count]]
