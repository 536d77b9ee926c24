"""Exactness: the same per-frame scores from PyTorch and onnxruntime, whole or streamed."""

import numpy as np
import pytest
import torch

from conftest import clip, export_test_model
from streamrnn.deploy.verify import (
    TOLERANCE,
    ParityError,
    batched_scores,
    check_parity,
    pad_to_chunks,
    parity,
    torch_scores,
)
from streamrnn.runtime import StreamingModel


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
def test_four_ways_agree_on_real_audio(tmp_path, speech, cell):
    model, _, path = export_test_model(tmp_path, cell)
    gaps = parity(model, path, speech, [clip("down"), clip("silence")])
    print(cell, gaps)
    assert max(gaps.values()) < TOLERANCE, gaps


@pytest.mark.parametrize(("cell", "kind"), [("lstm", "audio"), ("gru", "sensor")])
def test_causal_convolution_streams_exactly(tmp_path, speech, cell, kind):
    """The convolution's past frames are carried as state: chunk edges change nothing."""
    model, _, path = export_test_model(tmp_path, cell, kind, chunk=3, context_frames=5)
    signal = (
        speech
        if kind == "audio"
        else np.cumsum(np.random.default_rng(1).normal(size=(230, 3)), axis=0).astype(np.float32)
    )
    others = [clip("down")] if kind == "audio" else [signal[::-1].copy()]
    gaps = parity(model, path, signal, others)
    assert max(gaps.values()) < TOLERANCE, gaps


def test_a_file_whose_scores_are_not_its_models_is_refused(tmp_path, speech):
    """What release checks: a model changed after its export, or scores that are not numbers."""
    model, _, path = export_test_model(tmp_path)
    check_parity(parity(model, path, speech, [clip("down")]), path)
    with torch.no_grad():
        model.head.bias[0] += 1.0  # the PyTorch model moves on; the file does not
    gaps = parity(model, path, speech, [clip("down")])
    with pytest.raises(ParityError, match=f"{path}: its scores differ from the PyTorch model.s \\(torch_chunks"):
        check_parity(gaps, path)
    with pytest.raises(ParityError, match="nan"):
        check_parity({"torch_chunks": 0.0, "onnx_chunks": float("nan"), "onnx_batched": 0.0}, path)


def test_scores_are_not_trivial(tmp_path, speech):
    """Guard for the parity test: scores move with the audio, so agreement means something."""
    model, _, path = export_test_model(tmp_path)
    runtime = StreamingModel(path)
    scores = runtime.score([pad_to_chunks(speech, runtime.chunk)])[0]
    assert scores.std(axis=0).max() > 1e-3
    assert np.allclose(scores.sum(axis=1), 1, atol=1e-5)


def test_sensor_model_streams_exactly(tmp_path):
    model, recipe, path = export_test_model(tmp_path, "gru", "sensor", chunk=10)
    rng = np.random.default_rng(0)
    signal = np.cumsum(rng.normal(size=(230, 3)), axis=0).astype(np.float32)
    other = rng.normal(size=(170, 3)).astype(np.float32)
    gaps = parity(model, path, signal, [other])
    assert max(gaps.values()) < TOLERANCE, gaps


def test_irregular_pieces_give_the_same_scores(tmp_path, speech):
    _, _, path = export_test_model(tmp_path)
    runtime = StreamingModel(path)
    audio = pad_to_chunks(speech, runtime.chunk)
    whole = runtime.score([audio])[0]
    for pieces in [(1,), (37,), (None,), (1, 37, None)]:
        got = batched_scores(runtime, audio, [], pieces)
        assert got.shape == whole.shape
        assert np.abs(got - whole).max() < TOLERANCE, pieces


def test_streams_do_not_leak_into_each_other(tmp_path, speech):
    """A stream's scores depend on its own audio only, not on who shares the batch."""
    model, _, path = export_test_model(tmp_path)
    runtime = StreamingModel(path)
    audio = pad_to_chunks(speech, runtime.chunk)
    alone = batched_scores(runtime, audio, [])
    crowded = batched_scores(runtime, audio, [clip("down"), clip("yes"), clip("no")])
    assert np.abs(alone - crowded).max() < TOLERANCE
    reference = torch_scores(model, audio)
    assert np.abs(reference - alone).max() < TOLERANCE
