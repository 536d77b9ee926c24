"""Training on real data: held-out accuracy, reproducibility, resume, early stop, errors."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import DATA_ROOT, ROOT, clip, needs_data
from streamrnn.deploy.release import train_and_release
from streamrnn.deploy.verify import parity
from streamrnn.recipe.schema import AugmentConfig, RecipeError, load_recipe
from streamrnn.runtime import StreamingModel
from streamrnn.training.augment import Augmenter
from streamrnn.training.checkpoint import load_checkpoint
from streamrnn.training.data import DataError, load_splits
from streamrnn.training.train import DivergedError, best_f1_threshold, train

TINY = ROOT / "tests" / "recipes" / "tiny_commands.toml"


def tiny(tmp_path, name="run", **train_settings):
    recipe = load_recipe(TINY, str(DATA_ROOT))
    recipe.train.out_dir = str(tmp_path / name)
    for key, value in train_settings.items():
        section, _, field = key.partition("__")
        setattr(getattr(recipe, section), field, value)
    return recipe


def weights(path):
    return load_checkpoint(path)[2]["model"]


@needs_data
def test_small_gru_beats_chance_on_held_out_speakers_and_streams_exactly(tmp_path):
    recipe = tiny(tmp_path)
    path = train_and_release(recipe)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    chance = 1 / len(report["labels"])
    print("held-out speakers accuracy", report["test_accuracy"], "chance", chance)
    assert report["test_accuracy"] >= 3 * chance  # 0.6 for five labels
    runtime = StreamingModel(path)
    assert runtime.info.name == "tiny_commands" and runtime.info.cell == "gru"
    assert set(runtime.info.thresholds) == {"yes", "no", "up", "down"}
    assert "speech_commands" in runtime.info.trained_on
    model, _, _ = load_checkpoint(tmp_path / "run" / "best.pt")
    speech = np.concatenate([clip("yes"), clip("down"), clip("silence")])
    gaps = parity(model, path, speech, [clip("no"), clip("up")])
    assert max(gaps.values()) < 1e-4, gaps
    # the held-out clips committed with the tests are recognised by their peak score
    for word in ("yes", "no", "up", "down"):
        runtime.add_stream(word)
        runtime.feed(word, np.pad(clip(word), (0, 1280)))
    scores = runtime.run()
    right = sum(runtime.info.labels[scores[w].max(0)[:4].argmax()] == w for w in ("yes", "no", "up", "down"))
    assert right >= 3


@needs_data
def test_same_seed_same_weights_and_resume_continues_exactly(tmp_path):
    small = dict(data__max_per_label=24, model__hidden=16, train__epochs=2, train__early_stop=5)
    train(tiny(tmp_path, "a", **small))
    train(tiny(tmp_path, "b", **small))
    half = tiny(tmp_path, "c", **small)
    half.train.epochs = 1
    train(half)
    shutil.copy(tmp_path / "c" / "last.pt", tmp_path / "c1.pt")
    train(tiny(tmp_path, "c", **small), resume=tmp_path / "c1.pt")
    a, b, c = (weights(tmp_path / run / "last.pt") for run in "abc")
    for key in a:
        assert torch.equal(a[key], b[key]), key
        assert torch.equal(a[key], c[key]), key
    assert load_checkpoint(tmp_path / "c" / "last.pt")[2]["epoch"] == 1
    assert sorted(p.name for p in (tmp_path / "c").glob("epoch-*.pt")) == ["epoch-01.pt", "epoch-02.pt"]


@needs_data
def test_early_stop_ends_a_run_that_stops_improving(tmp_path):
    recipe = tiny(
        tmp_path, data__max_per_label=24, model__hidden=16, train__epochs=30, train__early_stop=2, train__lr=1e-12
    )
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "epoch-09.pt").write_bytes(b"an earlier run's")
    train(recipe)
    assert load_checkpoint(tmp_path / "run" / "last.pt")[2]["epoch"] == 2
    assert sorted(p.name for p in (tmp_path / "run").glob("epoch-*.pt")) == [f"epoch-0{i}.pt" for i in (1, 2, 3)]


def test_a_silent_noise_cut_leaves_the_clip_clean_not_nan():
    music = [torch.cat([torch.zeros(16000), torch.full((16000,), 0.5)])]  # a pause, then sound
    augmenter = Augmenter(AugmentConfig(noise_prob=1.0, snr_min=0.0, snr_max=0.0), 16000, music)
    torch.manual_seed(0)
    mixed = augmenter.waveforms(torch.full((200, 1600), 0.1))
    assert torch.isfinite(mixed).all()
    clean = (mixed - 0.1).abs().amax(1) < 1e-6
    assert 0 < int(clean.sum()) < 200  # cuts from the pause add nothing, the others add noise


@needs_data
def test_a_run_whose_loss_is_not_finite_stops_with_an_error(tmp_path):
    recipe = tiny(tmp_path, data__max_per_label=24, model__hidden=16, train__epochs=3, train__lr=1e30)
    with pytest.raises(DivergedError, match=r"tiny_commands.toml: epoch \d: the training loss is nan"):
        train_and_release(recipe)
    assert not list((tmp_path / "run").glob("*.onnx"))  # nothing released


@needs_data
def test_sensor_model_trains_on_ts_data_with_frame_targets(tmp_path):
    recipe_file = tmp_path / "motion.toml"
    recipe_file.write_text(f"""
name = "motion"
[data]
kind = "sensor"
layout = "ts"
path = "sensor/BasicMotions"
channels = 6
sample_rate = 10
clip_seconds = 10.0
background_label = "Standing"
validation = 0.2
test = 0.2
[model]
hidden = 16
layers = 1
chunk = 10
[train]
epochs = 3
target = "frame"
out_dir = "{tmp_path / "out"}"
""")
    path = train_and_release(load_recipe(recipe_file, str(DATA_ROOT)))
    info = StreamingModel(path).info
    assert info.kind == "sensor" and info.channels == 6 and info.frame_hop == 1
    assert info.labels == ("Standing", "Running", "Walking", "Badminton")


@needs_data
def test_ddp_under_torchrun(tmp_path):
    recipe = tmp_path / "ddp.toml"
    text = (
        TINY.read_text()
        .replace("max_per_label = 200", "max_per_label = 24")
        .replace("epochs = 12", "epochs = 1")
        .replace("threads = 2", "threads = 1")
    )
    recipe.write_text(text)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "streamrnn",
            "train",
            str(recipe),
            "--data-root",
            str(DATA_ROOT),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "runs" / "tiny_commands" / "tiny_commands.onnx").is_file()
    assert done.stdout.count("epoch 1:") == 1  # one rank reports


def write_recipe(tmp_path, body):
    path = tmp_path / "r.toml"
    path.write_text('name = "x"\n' + body)
    return path


def test_unknown_recipe_key_is_named(tmp_path):
    path = write_recipe(tmp_path, "[train]\nlearning_rate = 0.1\n")
    with pytest.raises(RecipeError, match=r"r.toml: unknown key train.learning_rate"):
        load_recipe(path)


def test_wrong_type_and_bad_choice_are_named(tmp_path):
    base = '[data]\npath = "p"\nbackground_label = "n"\n'
    with pytest.raises(RecipeError, match=r"train.epochs = 'ten' is not a int"):
        load_recipe(write_recipe(tmp_path, base + '[train]\nepochs = "ten"\n'))
    with pytest.raises(RecipeError, match=r"model.cell = 'transformer' \(expected one of"):
        load_recipe(write_recipe(tmp_path, base + '[model]\ncell = "transformer"\n'))
    with pytest.raises(RecipeError, match="model.context_frames must be 0 \\(none\\) or at least 2"):
        load_recipe(write_recipe(tmp_path, base + "[model]\ncontext_frames = 1\n"))
    with pytest.raises(RecipeError, match="not valid TOML"):
        load_recipe(write_recipe(tmp_path, "[data\n"))


def folder_recipe(tmp_path, labels):
    root = tmp_path / "data"
    for label, count in labels.items():
        (root / "set" / label).mkdir(parents=True)
        for i in range(count):
            sf.write(root / "set" / label / f"{label}_{i}.wav", clip("yes")[:8000] * (i + 1) / 10, 16000)
    path = write_recipe(tmp_path, f'[data]\nroot = "{root}"\npath = "set"\nbackground_label = "noise"\nnoise = ""\n')
    return load_recipe(path)


def test_label_without_examples_is_named(tmp_path):
    recipe = folder_recipe(tmp_path, {"go": 10, "noise": 0})
    with pytest.raises(DataError, match="no examples for label\\(s\\) noise"):
        load_splits(recipe)


def test_missing_or_unreadable_data_is_named(tmp_path):
    recipe = folder_recipe(tmp_path, {"go": 10, "noise": 10})
    recipe.data.path = "elsewhere"
    with pytest.raises(DataError, match="elsewhere: data path does not exist"):
        load_splits(recipe)
    recipe.data.path = "set"
    (tmp_path / "data" / "set" / "go" / "go_3.wav").write_bytes(b"junk")
    with pytest.raises(DataError, match="go_3.wav: cannot read audio"):
        load_splits(recipe)


def test_folder_layout_splits_groups_apart(tmp_path):
    recipe = folder_recipe(tmp_path, {"go": 30, "noise": 30})
    recipe.data.group_regex = r"_(\d)"  # first digit of the take: ten groups
    splits = load_splits(recipe)
    parts = [{x.group for x in part} for part in (splits.train, splits.validation, splits.test)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert splits.labels == ["go", "noise"]


@needs_data
@pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("flite") is None,
    reason="espeak-ng/flite not installed (tests/run.sh installs them as root)",
)
def test_synthetic_speech_only_trains(tmp_path):
    from streamrnn.training.synth import voices

    recipe = tiny(tmp_path, data__max_per_label=24)
    recipe.synth.per_label = 4
    splits = load_splits(recipe)
    synthetic = [x for x in splits.train if x.group.startswith("synth:")]
    assert len(synthetic) == 4 * 4  # yes, no, up, down; not the background label
    assert not any(x.group.startswith("synth:") for x in splits.validation + splits.test)
    assert all(x.samples.abs().max() > 0.1 for x in synthetic)
    assert {x.group.split(":")[1] for x in synthetic} == {"espeak-ng", "flite"}  # seeded draw uses both
    assert voices(["espeak-ng", "flite"], 5, 3) == voices(["espeak-ng", "flite"], 5, 3)


def test_files_layout_extra_sources_fixed_labels_and_named_splits(tmp_path):
    root = tmp_path / "data"
    (root / "flat").mkdir(parents=True)
    (root / "words").mkdir()
    tone = clip("yes")[:8000]
    for speaker in ("ann", "bob", "cid", "dan"):
        for digit in (1, 2):
            sf.write(root / "flat" / f"{digit}_{speaker}_0.wav", tone, 16000)
    for i in range(5):
        sf.write(root / "words" / f"hello_{i:08x}_nohash_0.wav", tone, 16000)
    sf.write(root / "flat" / "README.wav", tone, 16000)  # the label regex does not select it
    path = write_recipe(
        tmp_path,
        f"""
[data]
root = "{root}"
path = "flat"
layout = "files"
label_regex = '^(\\d)_'
label_map = {{ "1" = "one", "2" = "two" }}
labels = ["one", "two", "_unknown_", "_silence_"]
background_label = "_silence_"
noise = "words"
noise_clips = 3
group_regex = '^\\d_([a-z]+)_'
validation_groups = ["bob"]
test_groups = ["cid"]
[[data.extra]]
path = "words"
layout = "files"
label_regex = '^([a-z]+)_'
label = "_unknown_"
max_clips = 2
""",
    )
    splits = load_splits(load_recipe(path))
    by_split = {
        name: sorted((splits.labels[x.label], x.group) for x in getattr(splits, name))
        for name in ("train", "validation", "test")
    }
    assert by_split["validation"] == [("one", "bob"), ("two", "bob")]
    assert by_split["test"] == [("one", "cid"), ("two", "cid")]
    train_labels = [label for label, _ in by_split["train"]]
    assert train_labels.count("_unknown_") == 2 and train_labels.count("_silence_") == 3
    assert train_labels.count("one") == 2 and train_labels.count("two") == 2  # ann and dan


@pytest.mark.parametrize("train_only", [False, True])
def test_train_only_extra_source_never_validates_or_tests(tmp_path, train_only):
    from streamrnn.evaluation.clips import recipe_items

    root = tmp_path / "data"
    (root / "flat").mkdir(parents=True)
    (root / "talk").mkdir()
    tone = clip("yes")[:8000]
    for speaker in ("ann", "bob", "cid"):
        sf.write(root / "flat" / f"1_{speaker}_0.wav", tone, 16000)
        sf.write(root / "talk" / f"{speaker}.wav", tone, 16000)
    path = write_recipe(
        tmp_path,
        f"""
[data]
root = "{root}"
path = "flat"
layout = "files"
label_regex = '^(\\d)_'
labels = ["1", "_silence_"]
background_label = "_silence_"
noise = ""
group_regex = '^\\d_([a-z]+)_'
validation_groups = ["bob"]
test_groups = ["cid"]
[[data.extra]]
path = "talk"
layout = "tree"
label = "_silence_"
group_regex = '^([a-z]+)'
train_only = {str(train_only).lower()}
""",
    )
    recipe = load_recipe(path)
    splits = load_splits(recipe)
    talk = {
        name: sorted(x.group for x in getattr(splits, name) if x.label == 1) for name in ("train", "validation", "test")
    }
    if train_only:
        assert talk == {"train": ["ann", "bob", "cid"], "validation": [], "test": []}
    else:
        assert talk == {"train": ["ann"], "validation": ["bob"], "test": ["cid"]}
    tested = sorted(item.label for item in recipe_items(recipe, "test", 16000))
    assert tested == (["1"] if train_only else ["1", "_silence_"])
    if train_only:  # eval of a split a training-only source never reaches does not need its files
        shutil.rmtree(root / "talk")
        assert sorted(item.label for item in recipe_items(recipe, "validation", 16000)) == ["1"]
        with pytest.raises(DataError, match="talk"):
            recipe_items(recipe, "train", 16000)


@needs_data
def test_magic_wand_text_files_give_one_group_per_recording():
    """The magic_wand files hold about 100 recordings each behind `-,-,-,N` lines; every one is a
    recording of its own (a split never cuts one), 200 rows of accelerometer x, y, z."""
    recipe = load_recipe(ROOT / "training" / "recipes" / "wand.toml", str(DATA_ROOT))
    splits = load_splits(recipe)
    everything = splits.train + splits.validation + splits.test
    assert len(everything) == len({x.group for x in everything}) == 406
    assert {tuple(x.samples.shape) for x in everything} == {(200, 3)}
    assert {x.group.split("/")[0] for x in splits.test} == {"ring", "slope", "wing", "negative"}
    at_rest = torch.stack([x.samples[:5].mean(0) for x in everything]).median(0).values
    assert 900 < at_rest[2] < 1300  # milli-g: gravity on z before the gesture starts


def test_bad_recording_text_file_is_named(tmp_path):
    from streamrnn.recipe.datasets import read_txt_recordings

    path = tmp_path / "wing.txt"
    path.write_text("-,-,-,1\n1.0,2.0,3.0\n1.0,2.0,3.0\n-,-,-,2\n4.0,5.0,6.0\n")
    assert [x.shape for x in read_txt_recordings(path)] == [(2, 3), (1, 3)]
    for text, error in (
        ("1.0,2.0,3.0\n", "wing.txt:1: data before the first"),
        ("-,-,-,1\n1.0,x,3.0\n", "wing.txt:2: not a row of numbers"),
        ("-,-,-,1\n1.0,2.0\n1.0,2.0,3.0\n", "wing.txt: rows of different lengths"),
        ("-,-,-,1\n", "wing.txt: no recordings"),
    ):
        path.write_text(text)
        with pytest.raises(DataError, match=error):
            read_txt_recordings(path)


def test_threshold_is_the_middle_of_equally_good_ones():
    positive = np.array([True, True, False, False])
    # every threshold from 0.35 to 0.85 separates the two positives (0.85) from the negatives (0.3)
    assert best_f1_threshold(np.array([0.85, 0.85, 0.3, 0.3]), positive) == 0.6
    # one best threshold: 0.4 keeps both positives and drops the negative at 0.38
    assert best_f1_threshold(np.array([0.42, 0.9, 0.38, 0.1]), positive) == 0.4
    assert best_f1_threshold(np.array([0.9, 0.1]), np.array([False, False])) == 0.5
