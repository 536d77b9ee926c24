"""Every bundled model: loads, honours the contract, says where its data came from, and
recognises real clips it was not trained on. Evaluation runs through `streamrnn eval`."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import soundfile as sf

from conftest import CLIPS, DATA_ROOT, ROOT, STREAMRNN, clip, needs_data
from streamrnn.audio import read_audio
from streamrnn.catalog import BUNDLED
from streamrnn.runtime import StreamingModel

BUNDLED_MODELS = sorted(BUNDLED.glob("*.onnx"))


def run_eval(*args) -> dict:
    done = subprocess.run(
        STREAMRNN + ["eval", *map(str, args), "--json"], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("path", BUNDLED_MODELS, ids=lambda p: p.stem)
def test_bundled_model_honours_the_contract(path):
    info = StreamingModel(path).info
    assert info.name == path.stem
    assert info.license and info.trained_on and info.description
    assert set(info.thresholds) <= set(info.labels) - {info.background_label}
    assert (BUNDLED / f"{path.stem}.md").is_file(), "every bundled model has a model card"


def commands_folders(tmp_path):
    for name, label in (("yes", "yes"), ("no", "no"), ("up", "up"), ("down", "down"), ("silence", "_silence_")):
        (tmp_path / label).mkdir()
        source = next(CLIPS.glob(f"{name}_*.flac"))
        (tmp_path / label / source.name).symlink_to(source)
    return tmp_path


@pytest.mark.parametrize(
    "model, data, least",
    [
        ("commands", None, 4),  # 5 held-out Speech Commands clips
        ("motions", CLIPS / "motions", 3),  # 4 recordings of the official BasicMotions test set
        ("digits", CLIPS / "digits", 3),  # 4 digits of the held-out FSDD speaker
        ("wand", CLIPS / "wand", 3),  # 4 held-out magic_wand recordings, one per label
    ],
)
def test_bundled_model_recognises_held_out_clips(tmp_path, model, data, least):
    if not (BUNDLED / f"{model}.onnx").exists():
        pytest.fail(f"bundled model {model} is missing")
    report = run_eval("--model", model, data or commands_folders(tmp_path), "--out", tmp_path / "report")
    correct = round(report["accuracy"] * report["clips"])
    assert correct >= least, report["errors"]
    assert (tmp_path / "report" / "report.md").read_text().startswith(f"# {model} ")
    assert (tmp_path / "report" / "confusion.png").stat().st_size > 1000


@needs_data
def test_eval_on_a_recipe_split_matches_training_report():
    report = run_eval(
        "--model", "commands", "--recipe", "training/recipes/commands.toml", "--split", "test", "--data-root", DATA_ROOT
    )
    # training's test figure for commands 0.5.0 (its report.json), to the report's four places
    assert report["clips"] == 1351 and report["accuracy"] == pytest.approx(0.9504, abs=1e-4)
    assert sum(v["support"] for v in report["per_label"].values()) == 1351


def test_eval_refuses_labels_the_model_lacks(tmp_path):
    (tmp_path / "maybe").mkdir()
    (tmp_path / "maybe" / "x.flac").symlink_to(next(CLIPS.glob("yes_*.flac")))
    done = subprocess.run(
        STREAMRNN + ["eval", "--model", "commands", str(tmp_path)], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 1 and "labels maybe are not labels of model commands" in done.stderr


SAMPLES = ROOT / "streamrnn" / "samples"
WAKE = SAMPLES / "wake.flac"  # mbrola us2: computer 0.50-1.07 s, jarvis 2.57-2.97 s
WAKE_HA = SAMPLES / "wake_ha.flac"  # mbrola us2: hey jarvis 0.50-1.10 s, okay nabu 2.60-3.19 s
PHRASES = {  # label: where it is said (sample, start, end)
    "computer": (WAKE, 0.50, 1.07),
    "jarvis": (WAKE, 2.57, 2.97),
    "hey jarvis": (WAKE_HA, 0.50, 1.10),
    "okay nabu": (WAKE_HA, 2.60, 3.19),
}
SAID = {label: [where] for label, where in PHRASES.items()}
SAID["jarvis"].append(PHRASES["hey jarvis"])  # "jarvis" is said in "hey jarvis" too


@pytest.mark.parametrize("phrase", list(PHRASES))
def test_bundled_wake_word_fires_on_its_phrase_only(tmp_path, phrase):
    """A wake word trained from text: it fires where its phrase is spoken by a text-to-speech engine it
    never heard (mbrola), and not on the other wake phrases nor on real held-out speech."""
    name = phrase.replace(" ", "_")
    if not (BUNDLED / f"{name}.onnx").exists():
        pytest.fail(f"bundled model {name} is missing")
    parts = {"speech": np.concatenate([clip(w) for w in ("yes", "no", "up", "down", "silence")])}
    parts |= {sample: read_audio(sample, 16000) for sample in (WAKE, WAKE_HA)}
    offsets = dict(zip(parts, np.cumsum([0] + [len(a) for a in parts.values()]) / 16000))
    sf.write(tmp_path / "stream.wav", np.concatenate(list(parts.values())), 16000)
    done = subprocess.run(
        STREAMRNN + ["detect", "--model", name, str(tmp_path / "stream.wav")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["label"] for e in events] == [phrase] * len(SAID[phrase]), events
    for event, (sample, start, end) in zip(events, SAID[phrase]):
        assert offsets[sample] + start <= event["end"] <= offsets[sample] + end + 0.5, events


@pytest.mark.parametrize("name", ["commands", "digits"])
def test_bundled_word_models_stay_quiet_on_the_wake_phrases(name):
    """The demo serves the word models beside the wake words: none fires on the synthetic wake
    phrases (a candidate `commands` said "yes" at 0.99 on "jarvis")."""
    for sample in (WAKE, WAKE_HA):
        done = subprocess.run(
            STREAMRNN + ["detect", "--model", name, str(sample)], capture_output=True, text=True, timeout=60, cwd=ROOT
        )
        assert done.returncode == 0 and done.stdout == "", (sample.name, done.stdout, done.stderr)
