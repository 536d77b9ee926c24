"""The distilled student encoder: the bundled checkpoint streams and batches exactly inside a
contract graph, a small head on it learns real words, and `distill` moves a student toward the
teacher on speakers it never heard."""

import json

import onnx
import pytest
import torch

from conftest import DATA_ROOT, ROOT, clip, export_test_model, needs_data
from streamrnn.deploy.release import train_and_release
from streamrnn.deploy.verify import TOLERANCE, parity
from streamrnn.evaluation.clips import evaluate_clips, recipe_items
from streamrnn.recipe.schema import RecipeError, encoder_path, finish, load_recipe
from streamrnn.runtime import StreamingModel
from streamrnn.training.checkpoint import load_checkpoint
from streamrnn.training.distill import distill, load_distill_recipe
from streamrnn.training.student import StudentEncoder


@pytest.mark.parametrize("chunk", [1, 4])
def test_student_in_a_contract_graph_streams_and_batches_exactly(tmp_path, chunk):
    """Exported as the lean graph (deploy/lean.py: 51 operators, where tracing wrote 177), for
    chunks of one 80-ms frame or several."""
    model, _, path = export_test_model(tmp_path, "gru", chunk=chunk, encoder="student")
    assert len(onnx.load(str(path)).graph.node) <= 60
    runtime = StreamingModel(path)
    assert runtime.info.frame_hop == 1280 and (runtime.info.smoothing, runtime.info.patience) == (1, 1)
    assert "streamrnn student" in runtime.info.license and "Google speech_embedding" in runtime.info.license
    speech = clip("yes")[:16000]
    gaps = parity(model, path, speech, [clip("down"), clip("silence")])
    print(gaps)
    assert max(gaps.values()) < TOLERANCE, gaps


@pytest.mark.parametrize("chunk", [1, 3])
def test_filterbank_student_in_a_contract_graph_streams_and_batches_exactly(tmp_path, chunk):
    """A student on the learned filterbank, stepping once per 80 ms (model.encoder_file names its
    checkpoint): its lean graph is a Conv where the log-mel's DFT stages were."""
    torch.manual_seed(0)
    StudentEncoder(hidden=32, front="filterbank", stack=8).save(tmp_path / "student.pt")
    model, _, path = export_test_model(
        tmp_path, "gru", chunk=chunk, encoder="student", encoder_file=str(tmp_path / "student.pt")
    )
    graph = onnx.load(str(path)).graph
    assert len(graph.node) <= 35 and "Conv" in {n.op_type for n in graph.node}
    gaps = parity(model, path, clip("yes")[:15360], [clip("down")[:15360], clip("silence")[:15360]])
    assert max(gaps.values()) < TOLERANCE, gaps


def test_encoder_file_needs_the_student_and_an_existing_file(tmp_path):
    recipe = load_recipe(ROOT / "tests" / "recipes" / "tiny_commands.toml", str(DATA_ROOT))
    recipe.model.encoder_file = str(tmp_path / "missing.pt")
    with pytest.raises(RecipeError, match='tiny_commands.toml: model.encoder_file .* model.encoder = "student"'):
        finish(recipe)
    recipe.model.encoder = "student"
    with pytest.raises(RecipeError, match="model.encoder_file: .*missing.pt: no such file .*streamrnn distill"):
        finish(recipe)
    recipe.model.encoder_file = "student_fb96.pt"  # a bundled student by its file name
    bundled = encoder_path(finish(recipe).model.encoder_file)
    assert bundled.is_file() and bundled.parts[-3:] == ("training", "encoders", "student_fb96.pt"), bundled
    assert StudentEncoder.load("student_fb96.pt").config == dict(
        hidden=96, layers=2, n_mels=40, dim=96, front="filterbank", stack=8
    )


def test_bundled_student_is_small_and_frozen():
    student = StudentEncoder.load()
    assert not any(p.requires_grad for p in student.parameters())
    assert sum(p.numel() for p in student.parameters()) < 1_000_000  # a few MB of float32


@needs_data
@pytest.mark.parametrize("encoder_lr", [0.0, 3e-4])
def test_small_head_on_the_student_learns_real_words(tmp_path, encoder_lr):
    """Frozen, the encoder ships as bundled; fine-tuned (train.encoder_lr), the file carries its
    new weights (release's parity check compares it with the PyTorch model)."""
    recipe = load_recipe(ROOT / "tests" / "recipes" / "tiny_commands.toml", str(DATA_ROOT))
    recipe.name, recipe.model.encoder, recipe.model.chunk = "tiny_student", "student", 1
    recipe.train.epochs, recipe.train.out_dir, recipe.train.encoder_lr = 4, str(tmp_path / "run"), encoder_lr
    train_and_release(finish(recipe))
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    print("held-out speakers accuracy on the student", report["test_accuracy"], "encoder_lr", encoder_lr)
    assert report["test_accuracy"] >= 3 / len(report["labels"])  # 0.6 for five labels; chance is 0.2
    # `streamrnn eval` frames the held-out clips as training did (1 s is 12.5 of the 80-ms frames)
    runtime = StreamingModel(tmp_path / "run" / "tiny_student.onnx")
    items = recipe_items(recipe, "test", runtime.info.sample_rate)
    accuracy = evaluate_clips(runtime, items)["accuracy"]  # rounded to four places
    assert accuracy == pytest.approx(report["test_accuracy"], abs=5e-5)
    bundled = StudentEncoder.load().state_dict()
    trained = load_checkpoint(tmp_path / "run" / "best.pt")[0].frontend.state_dict()
    moved = [key for key in bundled if not torch.equal(bundled[key], trained[key])]
    assert moved == ([] if encoder_lr == 0 else [k for k in bundled if k.startswith(("rnn.", "out."))]), moved


def test_fine_tuning_needs_the_student_encoder(tmp_path):
    recipe = load_recipe(ROOT / "tests" / "recipes" / "tiny_commands.toml", str(DATA_ROOT))
    recipe.train.encoder_lr = 1e-4
    with pytest.raises(RecipeError, match='tiny_commands.toml: train.encoder_lr .* model.encoder = "student"'):
        finish(recipe)


def tiny_distill_recipe(tmp_path, epochs: int):
    """Six minutes of Speech Commands' training speakers, twice (clean and noisy); a small student."""
    path = tmp_path / "encoder.toml"
    path.write_text(
        f'name = "tiny_encoder"\n[data]\nspeech = ["speech_commands"]\nmax_minutes = 6.0\n'
        f"seconds = 4.0\ncopies = 2\n[model]\nhidden = 64\n[train]\nepochs = {epochs}\n"
        f'out_dir = "{tmp_path / "run"}"\n[augment]\nnoise_prob = 0.8\n'
    )
    return load_distill_recipe(path, str(DATA_ROOT))


@needs_data
def test_distill_moves_the_student_toward_the_teacher_on_unheard_speakers(tmp_path):
    distill(tiny_distill_recipe(tmp_path, epochs=1))
    first = json.loads((tmp_path / "run" / "report.json").read_text())["held_out"]
    distill(tiny_distill_recipe(tmp_path, epochs=6))  # the cached teacher targets are reused
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    last = report["held_out"]["speech_commands (test speakers)"]
    print("held-out agreement after 1 and 6 epochs:", first, last)
    assert report["cache_seconds"] < 5
    assert last["r2"] > first["speech_commands (test speakers)"]["r2"] and last["cosine"] > 0.8
    student = StudentEncoder.load(tmp_path / "run" / "student.pt")
    assert "distilled from Google speech_embedding" in student.attribution


@pytest.mark.parametrize(
    ("model", "message"),
    [('front = "mfcc"', "model.front"), ("stack = 3", "model.stack must divide the 8 frames of 80 ms")],
)
def test_distill_recipe_names_a_bad_student_shape(tmp_path, model, message):
    path = tmp_path / "encoder.toml"
    path.write_text(f"[data]\nspeech = []\n[model]\n{model}\n")
    with pytest.raises(RecipeError, match=f"encoder.toml: .*{message}"):
        load_distill_recipe(path, str(DATA_ROOT))


def test_distill_recipe_names_a_missing_folder(tmp_path):
    path = tmp_path / "encoder.toml"
    path.write_text('[data]\nspeech = []\nnegatives = ["nowhere"]\n')  # no speech folder: needs no data root
    with pytest.raises(RecipeError, match="nowhere: no such folder .*fetch-negatives"):
        load_distill_recipe(path, str(DATA_ROOT))
