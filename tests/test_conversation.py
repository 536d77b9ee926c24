"""The conversation builder: each source (a speaker) in one split only, and a recording whose
transcript holds a wake phrase left out. Real Speech Commands and FSDD clips, copied under made-up
speaker names; a stand-in recogniser that hears "computer" wherever one speaker's clip lies (the
real build runs Whisper tiny.en)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from streamrnn.audio import read_many
from streamrnn.training.conversation import SPLITS, build, holds_phrase, split_of_source

DATA = ROOT / "tests" / "data"
CLIPS = sorted(DATA.glob("*_422d3197_nohash_0.flac")) + sorted(DATA.glob("digits/*/*.flac"))
PHRASE_CLIP = DATA / "yes_422d3197_nohash_0.flac"
PHRASE_SPEAKER = "0000abcd"


def words_folder(tmp: Path) -> Path:
    """Forty speakers of two clips each, in Speech Commands' layout; PHRASE_SPEAKER's clips are the
    `yes` recording."""
    root = tmp / "words"
    others = [c for c in CLIPS if c != PHRASE_CLIP]
    for i in range(40):
        speaker = PHRASE_SPEAKER if i == 0 else f"{i:08x}"
        for take in range(2):
            clip = PHRASE_CLIP if i == 0 else others[(i + take) % len(others)]
            (root / "word").mkdir(parents=True, exist_ok=True)
            shutil.copy(clip, root / "word" / f"{speaker}_nohash_{take}{clip.suffix}")
    return root


def stand_in_recogniser(heard: list[str]):
    """'computer' where the phrase clip's samples lie in a recording, else 'yes no'; each call noted."""
    marker = next(iter(read_many([PHRASE_CLIP], 16000).values()))[4000:4064]

    def recognise(samples: np.ndarray) -> str:
        windows = np.lib.stride_tricks.sliding_window_view(samples, len(marker))
        text = "Well, computer." if (windows == marker).all(axis=1).any() else "yes no"
        heard.append(text)
        return text

    return recognise


def test_sources_stay_in_one_split_and_phrases_are_left_out(tmp_path):
    out = tmp_path / "negatives"
    heard: list[str] = []
    manifest = build(["computer"], [words_folder(tmp_path)], {}, [], [], stand_in_recogniser(heard), out)

    entries = manifest["recordings"]
    split_of = {}
    for entry in entries:
        for source in entry["sources"]:
            assert split_of.setdefault(source, entry["split"]) == entry["split"], f"{source} in two splits"
            assert split_of_source(source) == entry["split"]
    assert len(split_of) == 40 and set(split_of.values()) == set(SPLITS)

    left_out = [e for e in entries if not e["kept"]]
    assert [f"words:{PHRASE_SPEAKER}" in e["sources"] for e in entries] == [not e["kept"] for e in entries]
    assert len(left_out) == 1 and left_out[0]["transcript"] == "Well, computer."
    on_disk = {str(p.relative_to(out)) for p in out.glob("conversation-*/words/*.flac")}
    assert on_disk == {e["file"] for e in entries if e["kept"]}
    assert json.loads((out / "conversation.json").read_text()) == manifest

    # another phrase: the kept transcripts decide, nothing is transcribed again
    again = build(["jarvis"], [words_folder(tmp_path)], {}, [], [], stand_in_recogniser(heard := []), out)
    assert heard == [] and all(e["kept"] for e in again["recordings"])
    assert len(list(out.glob("conversation-*/words/*.flac"))) == len(entries)


@pytest.mark.parametrize(
    "text, phrase, holds",
    [
        ("Computers, everywhere.", "computer", True),
        ("Fortran is the language of supercomputers.", "computer", True),
        ("I compute her taxes.", "computer", False),
        ("Hey, Jarvis!", "hey jarvis", True),
        ("Hey there, Jarvis.", "hey jarvis", False),
        ("Okay.", "okay nabu", False),
    ],
)
def test_a_transcript_holds_a_phrase_word_after_word(text, phrase, holds):
    assert holds_phrase(text, [phrase]) is holds
