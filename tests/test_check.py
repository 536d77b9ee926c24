"""A second look (contract.Check): a contract file that carries a small graph which rereads the
encoder's last frames where its label's score rises, run only there, as exactly as the scores."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import soundfile as sf

from conftest import CLIPS, DATA_ROOT, ROOT, STREAMRNN, clip
from streamrnn.audio import read_audio
from streamrnn.catalog import resolve_model
from streamrnn.contract import PREFIX, Check, ContractError
from streamrnn.decision import Decider
from streamrnn.deploy.check import window_graph, with_embeddings, write_check
from streamrnn.deploy.verify import TOLERANCE, batched_scores
from streamrnn.runtime import StreamingModel
from streamrnn.samples import sample

FRAMES = 12
LABEL = 0  # computer's column


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    """The bundled `computer` file with no check: its first-stage scores."""
    model = with_embeddings(resolve_model("computer"))
    del model.graph.output[-1]
    props = {p.key: p.value for p in model.metadata_props if p.key != PREFIX + "check"}
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    path = tmp_path_factory.mktemp("plain") / "computer.onnx"
    onnx.save(model, str(path))
    return path


def window(seed: int = 0, bias: float = 0.0, scale: float = 0.02, frames: int = FRAMES) -> bytes:
    """A check with random weights (scale 0: it says sigmoid(bias) to every window)."""
    rng = np.random.default_rng(seed)
    dim = with_embeddings(resolve_model("computer")).graph.output[-1].type.tensor_type.shape.dim[2].dim_value
    weight = rng.normal(size=(8, frames, dim)) * scale
    return window_graph(weight, rng.normal(size=8) * scale, rng.normal(size=8), bias)


def checked(plain: Path, tmp_path: Path, model: bytes, start: float) -> StreamingModel:
    return StreamingModel(write_check(plain, tmp_path / "checked.onnx", Check("computer", start, FRAMES, model), 0.5))


def wake() -> np.ndarray:
    """Real speech, then `computer` and `jarvis` spoken by a voice no model trained on."""
    return np.concatenate([clip("yes"), clip("no"), read_audio(sample("wake.flac"), 16000)])


def test_the_check_decides_the_label_only_where_its_score_rises(plain, tmp_path):
    first = StreamingModel(plain).score([wake()])[0]
    start = 0.05
    assert 0 < (first[:, LABEL] >= start).sum() < len(first) // 4, "the phrase, and only it, raises the score"
    yes = checked(plain, tmp_path, window(bias=30, scale=0), start)
    scores = yes.score([wake()])[0]
    assert np.array_equal(scores[:, LABEL], (first[:, LABEL] >= start).astype(np.float32))
    assert np.abs(scores[:, 1:] - first[:, 1:]).max() < TOLERANCE  # the other labels as they were
    assert yes._looker and yes._looker.looked == (first[:, LABEL] >= start).sum()
    assert [d.label for d in Decider(yes.info).update(scores)] == ["computer"]
    no = checked(plain, tmp_path, window(bias=-30, scale=0), start)
    assert not Decider(no.info).update(no.score([wake()])[0]), "a check that rejects everything silences the label"


@pytest.mark.parametrize("start", [0.0, 0.05])
def test_a_checked_file_scores_the_same_in_any_chunks_and_batches(plain, tmp_path, start):
    """From 0 every frame is looked at: each stream's window carries over calls as its state does."""
    model = checked(plain, tmp_path, window(seed=1, scale=0.05), start)
    audio = wake()
    whole = model.score([audio])[0]
    assert whole[:, LABEL].std() > 1e-3
    for chunk_frames in (1, 3, 7, 16):  # fewer frames than the window holds, and more
        piece = StreamingModel(model.info.path, chunk_frames=chunk_frames).score([audio])[0]
        n = min(len(piece), len(whole))  # each pads the tail to its own chunk
        assert n >= len(audio) // 1280 and np.abs(piece[:n] - whole[:n]).max() < TOLERANCE, chunk_frames
    crowded = batched_scores(model, audio, [clip("down"), clip("yes"), wake()[::-1].copy()])
    n = min(len(crowded), len(whole))
    assert np.abs(crowded[:n] - whole[:n]).max() < TOLERANCE


def rewrite(plain: Path, tmp_path: Path, check: dict | None, drop_output: bool = False) -> Path:
    model = onnx.load(str(write_check(plain, tmp_path / "base.onnx", Check("computer", 0.5, FRAMES, window()), 0.5)))
    props = {p.key: p.value for p in model.metadata_props}
    good = json.loads(props[PREFIX + "check"])
    props[PREFIX + "check"] = json.dumps({**good, **(check or {})})
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    if drop_output:
        del model.graph.output[-1]
    onnx.save(model, str(tmp_path / "bad.onnx"))
    return tmp_path / "bad.onnx"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"label": "jarvis"}, "check names label 'jarvis', which the model lacks"),
        ({"from": 2}, "check from=2 must be a number in"),
        ({"frames": 0}, "check frames=0 must be a whole number of at least 1"),
        ({"model": "not base64!"}, "check model is not base64"),
        ({"model": "AAAA"}, "the check's graph does not load"),
        ({"frames": 20}, r"the check's input window is \['n', 12, 192\], expected \[n, 20, 192\]"),
    ],
)
def test_a_broken_check_is_refused_in_one_line(plain, tmp_path, change, message):
    with pytest.raises(ContractError, match=message) as error:
        StreamingModel(rewrite(plain, tmp_path, change))
    assert str(tmp_path / "bad.onnx") in str(error.value) and "\n" not in str(error.value)


def test_a_check_needs_the_encoder_frames(plain, tmp_path):
    with pytest.raises(ContractError, match=r"outputs are .*, expected .*'embeddings'\]"):
        StreamingModel(rewrite(plain, tmp_path, None, drop_output=True))


def test_train_check_on_a_small_recipe(tmp_path, monkeypatch):
    """`train-check` on the bundled `computer` with a recipe of a few real words and 20 synthetic
    phrases: it writes a file whose check was picked on the validation audio it names."""
    from streamrnn.deploy.train_check import STARTS, CheckSettings, train_check
    from streamrnn.recipe.schema import SENTENCE_TEXTS, load_recipe
    from streamrnn.training.wakeword import write_recipe

    long = tmp_path / "talk"
    long.mkdir()
    sf.write(long / "talk.wav", np.concatenate([clip(w) for w in ("yes", "no", "up", "down", "silence")] * 8), 16000)
    path = write_recipe(["computer"], tmp_path)
    text = re.sub(r'\[\[data.extra\]\]\npath = "negatives:[^[]*', "", path.read_text())
    text = re.sub(r"background = \[.*\]", "background = []", text)
    text = re.sub(r"sentence_texts = \[.*\]", f"sentence_texts = [{json.dumps(SENTENCE_TEXTS)}]", text)
    text = re.sub(r"validation_negatives = \[.*\]", f"validation_negatives = [{json.dumps(str(long))}]", text)
    path.write_text(text + f'\n[[data.extra]]\npath = "{long}"\nlayout = "tree"\nlabel = "_background_"\n')
    recipe = load_recipe(path, str(DATA_ROOT))
    recipe.data.path, recipe.data.group_regex, recipe.data.noise_clips = str(CLIPS), "", 2
    recipe.synth.per_label, recipe.synth.confusable_voices, recipe.synth.sentences = 20, 1, 3
    recipe.synth.validation = 0.3
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    settings = CheckSettings(frames=4, hidden=4, epochs=1, near_words=2, near_word_voices=1)
    out = tmp_path / "computer_checked.onnx"
    report = train_check(recipe, resolve_model("computer"), out, None, settings, "9.9.9")
    assert report["windows"]["positive"] > 0 and report["windows"]["negative"] > 0
    assert [t["from"] for t in report["tried"]] == list(STARTS)
    info = StreamingModel(out).info
    assert info.version == "9.9.9" and info.check and info.check.frames == 4
    assert (info.check.start, info.thresholds["computer"]) == (report["picked"]["from"], report["picked"]["threshold"])
    assert json.loads((tmp_path / "computer_checked_check.json").read_text())["picked"] == report["picked"]


@pytest.mark.parametrize(
    "model, label, message",
    [
        ("commands", None, "name the one to check with --label"),
        ("computer", "yes", "--label 'yes' is not one of its labels ['computer']"),
        ("motions", "Running", "no encoder frames to look at (only models on the speech encoder have them)"),
    ],
)
def test_train_check_refuses_what_it_cannot_check_in_one_line(tmp_path, model, label, message):
    args = ["train-check", str(ROOT / "training" / "recipes" / "computer.toml"), "--model", model]
    args += ["--out", str(tmp_path / "x.onnx"), "--data-root", str(DATA_ROOT)] + (["--label", label] if label else [])
    done = subprocess.run(STREAMRNN + args, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 1 and message in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert not (tmp_path / "x.onnx").exists()
