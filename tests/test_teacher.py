"""The pretrained speech encoder: the original ONNX files' numbers, streamed exactly inside a
contract graph, and a small head on it that learns real words."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import soundfile as sf
import torch

from conftest import DATA_ROOT, ROOT, clip, export_test_model, needs_data
from streamrnn.deploy.release import train_and_release
from streamrnn.deploy.verify import TOLERANCE, parity
from streamrnn.recipe.schema import RecipeError, finish, load_recipe
from streamrnn.runtime import StreamingModel
from streamrnn.training.teacher import TeacherEncoder, teacher_files
from streamrnn.training.train import train


@pytest.fixture(scope="module")
def encoder():
    return TeacherEncoder().eval()


def test_encoder_gives_the_original_files_numbers(encoder):
    """Mel frames as melspectrogram.onnx gives them (where its per-call 80 dB floor does not
    bite), and each embedding as embedding_model.onnx gives it for the 76 frames ending there."""
    mel_path, embedding_path = teacher_files()
    audio = np.concatenate([clip("yes"), clip("down")])[: 16 * 1280 * 2]
    with torch.no_grad():
        frames, _ = encoder.mel(torch.from_numpy(audio)[None], encoder.zero_state(1)[0])
        embeddings, _ = encoder(torch.from_numpy(audio)[None], encoder.zero_state(1))
    frames, embeddings = frames[0].numpy(), embeddings[0].numpy()
    # our frame j ends at sample 160 (j + 1); the file's frame i starts at 160 i of its input
    original = ort.InferenceSession(str(mel_path)).run(None, {"input": audio[128:][None] * 32768})[0][:, 0]
    original = original[0] / 10 + 2
    above_floor = original > original.max() - 8 + 1e-3
    assert above_floor.mean() > 0.7  # most frames are compared
    assert np.abs(frames[3 : 3 + len(original)] - original)[above_floor].max() < 1e-3
    session = ort.InferenceSession(str(embedding_path))
    ends = np.arange(10, len(embeddings))  # windows that lie inside the audio
    windows = np.stack([frames[8 * (k + 1) - 76 : 8 * (k + 1)] for k in ends])[..., None]
    expected = session.run(None, {"input_1": windows})[0].reshape(len(ends), -1)
    assert np.abs(expected).max() > 10
    assert np.abs(embeddings[ends] - expected).max() < 1e-3


def test_encoder_state_is_exact_across_any_chunking(encoder):
    audio = torch.from_numpy(np.concatenate([clip("no"), clip("up")])[: 1280 * 24])[None]
    with torch.no_grad():
        whole, _ = encoder(audio, encoder.zero_state(1))
        for frames in (1, 3, 5):
            state, parts = encoder.zero_state(1), []
            for start in range(0, audio.shape[1], 1280 * frames):
                part, state = encoder(audio[:, start : start + 1280 * frames], state)
                parts.append(part)
            assert (torch.cat(parts, 1) - whole).abs().max() < TOLERANCE, frames
    assert whole.std() > 1


def test_encoder_in_a_contract_graph_streams_and_batches_exactly(tmp_path, speech):
    model, _, path = export_test_model(tmp_path, "gru", chunk=1, encoder="teacher")
    runtime = StreamingModel(path)
    assert runtime.info.frame_hop == 1280 and runtime.chunk == 1280
    assert (runtime.info.smoothing, runtime.info.patience) == (1, 1)  # its own decisions: one 80-ms frame
    assert "Google speech_embedding (Apache-2.0)" in runtime.info.license
    gaps = parity(model, path, speech, [clip("down"), clip("silence")])
    print(gaps)
    assert max(gaps.values()) < TOLERANCE, gaps


def tiny_encoder_recipe(tmp_path):
    recipe = load_recipe(ROOT / "tests" / "recipes" / "tiny_commands.toml", str(DATA_ROOT))
    recipe.name, recipe.model.encoder, recipe.model.chunk = "tiny_encoder", "teacher", 1
    recipe.train.epochs, recipe.train.out_dir = 4, str(tmp_path / "run")
    return finish(recipe)


@needs_data
def test_small_head_on_the_encoder_learns_real_words(tmp_path):
    """...and its thresholds for a false-accept rate are picked on long validation negatives."""
    recipe = tiny_encoder_recipe(tmp_path)
    recipe.train.target_fa_per_hour, recipe.train.validation_negatives = 20.0, ["noise"]
    path = train_and_release(recipe)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    print("held-out speakers accuracy on the encoder", report["test_accuracy"])
    assert report["test_accuracy"] >= 4 / len(report["labels"])  # 0.8 for five labels
    assert max(report["parity_max_abs"].values()) < TOLERANCE
    runtime = StreamingModel(path)
    assert runtime.info.frame_hop == 1280
    noise_hours = sum(sf.info(p).duration for p in (DATA_ROOT / "noise").iterdir()) / 3600
    assert report["picked"]["negative_hours"] == pytest.approx(noise_hours, abs=0.01)
    assert runtime.info.thresholds == report["picked"]["thresholds"]
    # the epoch shipped is the one that misses fewest positives at the rate (ties: accuracy, then later)
    epochs = report["picked"]["epochs"]
    assert [e["checkpoint"] for e in epochs] == [f"epoch-0{i}.pt" for i in (1, 2, 3, 4)]
    shipped = epochs[
        min(range(4), key=lambda i: (np.mean(list(epochs[i]["frr"].values())), -epochs[i]["validation_accuracy"], -i))
    ]
    assert report["checkpoint"] == shipped["checkpoint"]
    assert report["validation_accuracy"] == shipped["validation_accuracy"]
    assert {k: v["frr"] for k, v in report["picked"]["per_label"].items()} == shipped["frr"]


@needs_data
@pytest.mark.parametrize("setting", ["train.validation_negatives", "synth.sentence_texts"])
def test_missing_folders_stop_before_synthesis_and_training(tmp_path, setting):
    recipe = tiny_encoder_recipe(tmp_path)
    recipe.synth.sentences = 1
    section, name = setting.split(".")
    setattr(getattr(recipe, section), name, ["nowhere"])
    with pytest.raises(RecipeError, match=f"{setting} nowhere: no such folder .*fetch-negatives"):
        train(recipe)
    assert not (tmp_path / "run").exists()
