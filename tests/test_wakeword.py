"""Wake words from text: the recipe, synthetic positives and negatives, long negative recordings,
and the threshold picker that meets a false-accept rate."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import CLIPS, DATA_ROOT, ROOT, STREAMRNN, clip, needs_data
from streamrnn.decision import DecisionSettings
from streamrnn.evaluation.detection import PICK_GRID, count_detections, pick_thresholds, read_negatives, scored_streams
from streamrnn.evaluation.negatives import REMOVE
from streamrnn.recipe.datasets import DataError
from streamrnn.recipe.schema import SENTENCE_TEXTS, RecipeError, load_recipe
from streamrnn.runtime import StreamingModel
from streamrnn.training.data import load_splits
from streamrnn.training.near_words import near_words
from streamrnn.training.synth import (
    COMMANDS,
    confusables,
    near_word_texts,
    negative_texts,
    phonemes,
    sentences,
    speak,
    voices,
)
from streamrnn.training.wakeword import NEGATIVE_REPEAT, write_recipe

TEMPLATE_ENGINES = ("espeak-ng", "flite", "pico", "rhvoice", "festival")  # and piper, a Python package
needs_tts = pytest.mark.skipif(
    any(shutil.which(COMMANDS[e]) is None for e in TEMPLATE_ENGINES),
    reason="text-to-speech engines not installed (tests/run.sh installs them as root)",
)


@pytest.mark.parametrize("engine", ["pico", "rhvoice", "festival", "mbrola"])
def test_every_engine_speaks_the_phrase_in_distinct_voices(engine):
    if shutil.which(COMMANDS[engine]) is None:
        pytest.skip(f"{COMMANDS[engine]} not installed (tests/run.sh installs it as root)")
    drawn = voices([engine], 3, 7)
    assert len(drawn) == 3 and drawn == voices([engine], 3, 7)
    clips = [speak("computer", voice, 16000) for voice in drawn]
    for audio in clips:
        assert 0.3 < len(audio) / 16000 < 2.5
        assert np.sqrt(np.mean(audio**2)) > 0.02
    assert len({len(audio) for audio in clips}) == 3  # rates differ


@needs_tts
def test_confusables_are_near_the_phrase_but_never_it():
    assert phonemes("jarvis") == ["dZ", "'A@", "v", "I", "s"]
    near = confusables("jarvis")
    assert "[[dZ'A@vIs]]" not in near
    assert "[[tS'A@vIs]]" in near  # a consonant swapped for its twin
    assert "[[dZ'A@Is]]" in near  # a phoneme dropped
    assert "[[dZ'A@v]]" in near  # the front kept
    assert "[[dZ'A@vIz]]" not in near  # a final s voiced is the same word


def test_sentences_never_hold_the_phrase():
    found = sentences(["hey computer"])
    assert len(found) > 100
    assert not any("comput" in s.lower() or "hey" in s.lower().split() for s in found)


def test_sentences_come_from_every_text_file_under_the_folders(tmp_path):
    quotes = tmp_path / "games" / "fortunes"  # fortune's layout: entries between lines of %, a binary index
    quotes.mkdir(parents=True)
    (quotes / "wisdom").write_text(
        "Never put off till tomorrow what you can do today.\n\t\t-- Thomas Jefferson\n%\n"
        "Your lucky number has been disconnected\n%\nThe computer is down again today, he said.\n%\n"
    )
    (quotes / "wisdom.dat").write_bytes(b"\0\0\0\x02Not a sentence in here at all.\0")
    found = sentences(["computer"], [tmp_path, Path(SENTENCE_TEXTS)])
    assert "Never put off till tomorrow what you can do today" in found
    assert "Your lucky number has been disconnected" in found  # not joined to the name before it
    assert not any("Jefferson" in s or "comput" in s.lower() or "at all" in s for s in found)
    assert set(sentences(["computer"])) < set(found)
    with pytest.raises(DataError, match=r"synth.sentence_texts: .*nowhere: no such folder"):
        sentences(["computer"], [tmp_path / "nowhere"])


@needs_tts
def test_negatives_of_several_phrases_hold_none_of_them(tmp_path):
    (tmp_path / "quotes").write_text(
        "The computer said no to everyone in the room.\n%\nJarvis, bring the car round to the front.\n%\n"
        "A watched pot never boils over the stove.\n%\nEvery cloud has a silver lining somewhere.\n%\n"
    )
    both = negative_texts(["computer", "jarvis"], 1, 6, [tmp_path], ["espeak-ng"], 0)
    spoken = [text for text, _ in both if not text.startswith("[[")]
    assert sorted(set(spoken)) == [
        "A watched pot never boils over the stove",
        "Every cloud has a silver lining somewhere",
    ]
    assert len(spoken) == 6  # drawn once for the model, not once per phrase
    near = {text for text, _ in both if text.startswith("[[")}
    assert near == set(confusables("computer")) | set(confusables("jarvis"))
    alone = negative_texts(["computer"], 1, 6, [tmp_path], ["espeak-ng"], 0)
    assert "Jarvis bring the car round to the front" in {text for text, _ in alone}
    twins = {text for text, _ in negative_texts(["pat", "bat"], 1, 0, [], ["espeak-ng"], 0)}
    assert "[[b'at]]" in confusables("pat") and "[[p'at]]" in confusables("bat")
    assert twins == (set(confusables("pat")) | set(confusables("bat"))) - {"[[b'at]]", "[[p'at]]"}


@needs_data
@needs_tts
def test_wakeword_recipe_data_positives_negatives_and_splits(tmp_path, monkeypatch, capsys):
    mine = tmp_path / "mine"
    (mine / "take1").mkdir(parents=True)
    for i, word in enumerate(("yes", "no", "up")):  # stand-ins for a user's own recordings
        sf.write(mine / "take1" / f"{i}.wav", clip(word), 16000)
    long = tmp_path / "negatives"
    long.mkdir()
    sf.write(long / "talk.wav", np.concatenate([clip(w) for w in ("yes", "no", "up", "down")] * 2), 16000)
    sf.write(long / "empty.wav", np.zeros(0, np.float32), 16000)  # counted and skipped
    heard = tmp_path / "captures" / "negative" / "hey-nova"  # a reviewed false accept, as review leaves it
    heard.mkdir(parents=True)
    sf.write(heard / "t_room_hey-nova_3.flac", clip("no"), 16000)
    (heard / "t_room_hey-nova_3.json").write_text('{"label": "hey nova"}')
    path = write_recipe(["Hey,  Nova!"], tmp_path, recordings=[str(mine)], negatives=[str(heard.parent)])
    assert path.name == "hey_nova.toml"
    text = re.sub(r'\[\[data.extra\]\]\npath = "negatives:[^[]*', "", path.read_text())  # the fetched packages:
    text = re.sub(r"background = \[.*\]", "background = []", text)  # one local folder instead
    text = re.sub(r"sentence_texts = \[.*\]", f"sentence_texts = [{json.dumps(SENTENCE_TEXTS)}]", text)
    path.write_text(text + f'\n[[data.extra]]\npath = "{long}"\nlayout = "tree"\nlabel = "_background_"\n')
    recipe = load_recipe(path, str(DATA_ROOT))
    assert recipe.name == "hey_nova" and recipe.data.labels == ["hey nova", "_background_"]
    recipe.data.path = str(CLIPS)  # a few real words as background instead of all of Speech Commands
    recipe.data.group_regex = ""
    recipe.data.noise_clips = 2
    recipe.synth.per_label, recipe.synth.confusable_voices, recipe.synth.sentences = 20, 1, 3
    recipe.synth.validation = 0.3
    recipe.train.out_dir = str(tmp_path / "run")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    splits = load_splits(recipe)
    assert "synthetic phrases: 0 of 20 from the cache" in capsys.readouterr().out
    again = load_splits(recipe)  # a resumed run: every clip from the cache, the same splits
    assert re.search(
        r"synthetic phrases: 20 of 20 from the cache.*\n.*negatives: (\d+) of \1 from", capsys.readouterr().out
    )
    assert all(np.array_equal(a.samples, b.samples) for a, b in zip(splits.train, again.train))
    every = splits.train + splits.validation + splits.test
    phrase = [x for x in every if splits.labels[x.label] == "hey nova"]
    assert sum(x.source.startswith(str(mine)) for x in phrase) == 3  # the user's recordings
    synthetic = [x for x in phrase if x.group.startswith("synth:")]
    assert len(synthetic) == 20 and any(x.group.startswith("synth:") for x in splits.validation)
    assert not any(x.group.startswith("synth") for x in splits.test)
    negatives = [x for x in splits.train if x.group.startswith("synth-neg:")]
    assert len(negatives) >= len(confusables("hey nova")) + 3
    again = [x for x in splits.train if x.source.endswith("t_room_hey-nova_3.flac")]
    assert len(again) == NEGATIVE_REPEAT == len([x for x in every if x.source == again[0].source])  # never validates
    assert {splits.labels[x.label] for x in again} == {"_background_"}
    cuts = [x for x in every if x.source.endswith("talk.wav")]
    assert len(cuts) == 8 // 1.5 and len({x.group for x in cuts}) == 1  # 8 s in 1.5-s cuts, one group
    assert all(len(x.samples) == recipe.clip_samples for x in every)


def test_several_phrases_make_one_model_with_a_label_each(tmp_path):
    path = write_recipe(["computer", "Hey Jarvis"], tmp_path)
    assert path.name == "computer_hey_jarvis.toml"
    recipe = load_recipe(path, str(DATA_ROOT))
    assert recipe.data.labels == ["computer", "hey jarvis", "_background_"]
    assert "computer and hey jarvis" in recipe.description


def test_wakeword_recipe_errors_are_named(tmp_path):
    with pytest.raises(RecipeError, match="has no letters or digits"):
        write_recipe(["!!"], tmp_path)
    with pytest.raises(RecipeError, match="two of them are the same phrase"):
        write_recipe(["Jarvis", "jarvis!"], tmp_path)
    with pytest.raises(RecipeError, match="with several phrases"):
        write_recipe(["computer", "jarvis"], tmp_path, recordings=[str(tmp_path)])
    (tmp_path / "captures" / "positive").mkdir(parents=True)
    with pytest.raises(RecipeError, match="captures: holds a positive/ folder .* give one inside it"):
        write_recipe(["computer"], tmp_path, negatives=[str(tmp_path / "captures")])
    done = subprocess.run(
        STREAMRNN
        + [
            "train-wakeword",
            "computer",
            "--recipe-only",
            "--recordings",
            str(tmp_path / "nowhere"),
            "--recipe-out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 1
    assert done.stderr.strip().endswith("--recordings " + str(tmp_path / "nowhere") + ": not a folder")


def test_fetched_validation_negatives_hold_no_line_that_says_computer(tmp_path):
    """fetch-negatives unpacks the Dutch voice acting (a real apt-get download) without the lines
    whose text says "computer", a Dutch word too (fetch stops if one of them is no longer there to
    remove), and leaves the packages already fetched alone."""
    for name in ("tuxpaint-stamps-default", "hedgewars-data"):
        (tmp_path / name).mkdir()
    done = subprocess.run(
        STREAMRNN + ["fetch-negatives", str(tmp_path), "--set", "validation"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert f"validation {tmp_path / 'fillets-ng-data-nl'}  (Dutch voice acting" in done.stdout
    lines = {path.name for path in (tmp_path / "fillets-ng-data-nl").rglob("*.ogg")}
    assert len(lines) > 1500 and not lines & set(REMOVE["fillets-ng-data-nl"])
    assert not any((tmp_path / "tuxpaint-stamps-default").iterdir())


@needs_data
def test_picked_thresholds_are_the_lowest_within_the_false_accept_target(tmp_path):
    model = StreamingModel(ROOT / "streamrnn" / "models" / "commands.onnx")
    negatives = read_negatives([str(DATA_ROOT / "noise")], 16000)
    positives = [(clip(w), w) for w in ("yes", "no", "up", "down")] * 2
    picked = pick_thresholds(model, negatives, positives, 2.0)
    hours = picked["negative_hours"]
    assert set(picked["thresholds"]) == {"yes", "no", "up", "down"}  # the labels with positives
    assert set(picked["skipped"]) == set(model.info.thresholds) - {"yes", "no", "up", "down"}
    scored = scored_streams(model, negatives, positives, None, 0)  # as the picker scored them
    for label, threshold in picked["thresholds"].items():
        others_off = dict.fromkeys(model.info.thresholds, 1.0)

        def fa_per_hour(t, label=label, others_off=others_off):
            counts = count_detections(model, scored, DecisionSettings(), {**others_off, label: t})
            return counts["false_accepts"] / hours

        assert fa_per_hour(threshold) <= 2.0
        lower = [t for t in PICK_GRID if t < threshold]
        if lower:
            assert fa_per_hour(lower[-1]) > 2.0, label
    # the CLI writes them into a copy of the model's metadata
    copy = tmp_path / "commands.onnx"
    shutil.copy(model.info.path, copy)
    for word in ("yes", "no"):
        (tmp_path / "clips" / word).mkdir(parents=True)
        (tmp_path / "clips" / word / "a.flac").symlink_to(next(CLIPS.glob(f"{word}_*.flac")))
    done = subprocess.run(
        STREAMRNN
        + [
            "eval",
            "--model",
            str(copy),
            str(tmp_path / "clips"),
            "--detect",
            "--negatives",
            str(DATA_ROOT / "noise"),
            "--pick-fa-per-hour",
            "2",
            "--write",
            str(copy),
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    written = json.loads(done.stdout)["thresholds"]
    assert set(written) == {"yes", "no"}  # the others had no positives: kept as they were
    assert StreamingModel(copy).info.thresholds == {**model.info.thresholds, **written}


def test_near_words_come_from_the_dictionary_and_never_hold_the_phrase():
    near = near_words("computer", ["computer"], 12, common={"compute"})
    assert near[0] == "compute"  # one edit away and a common word: first
    assert {"commuter", "computed", "commute"} <= set(near) and len(near) == 12
    assert not any(word.startswith("computer") for word in near)
    assert near_words("okay nabu", ["okay nabu"], 5) == []  # "nabu" is not in CMUdict


@needs_tts
def test_near_words_are_spoken_alone_and_inside_sentences():
    items = near_word_texts(["computer"], 3, 4, [Path(SENTENCE_TEXTS)], ["espeak-ng"], seed=0)
    texts = [text for text, _ in items]
    assert len({voice.key for _, voice in items}) == len(items) == 12
    words = texts[0:12:4]
    assert texts[0::2] == [w for w in words for _ in range(2)]  # alone in every other voice
    assert all(words[i // 2] in t.split() and len(t.split()) >= 4 for i, t in enumerate(texts[1::2]))
    assert not any(re.search(r"\bcomputer", t.lower()) for t in texts)
