"""The runtime: contract validation, stream bookkeeping, audio conversion, decisions."""

import numpy as np
import onnx
import pytest
import soundfile as sf

from conftest import CLIPS, clip, export_test_model
from streamrnn.audio import AudioError, read_audio
from streamrnn.catalog import resolve_model
from streamrnn.contract import ContractError
from streamrnn.decision import Decider, DecisionSettings
from streamrnn.runtime import Gate, StreamingModel
from streamrnn.samples import sample


@pytest.fixture(scope="module")
def contract(tmp_path_factory):
    return export_test_model(tmp_path_factory.mktemp("model"))[2]


def test_contract_metadata_is_complete(contract):
    info = StreamingModel(contract).info
    assert info.labels == ("a", "b", "c", "nothing")
    assert info.background_label == "nothing"
    assert (info.sample_rate, info.chunk, info.frame_hop, info.cell) == (16000, 1280, 160, "gru")
    assert info.thresholds == {"a": 0.5, "b": 0.5, "c": 0.5}
    assert (info.smoothing, info.patience) == (3, 2)  # 30 ms and 20 ms of 10-ms frames
    assert info.clip_seconds == 1.0  # eval centres shorter clips in this much silence, as training did
    props = {p.key for p in onnx.load(str(contract)).metadata_props}
    for key in (
        "format_version",
        "kind",
        "labels",
        "sample_rate",
        "chunk",
        "frame_hop",
        "cell",
        "thresholds",
        "background_label",
        "name",
        "version",
        "trained_on",
        "created",
        "smoothing",
        "patience",
        "clip_seconds",
    ):
        assert f"streamrnn.{key}" in props


def test_garbage_file_is_refused_in_one_line(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a model")
    with pytest.raises(ContractError) as err:
        StreamingModel(bad)
    assert str(bad) in str(err.value) and "not a loadable ONNX model" in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(ContractError, match="no such model file"):
        StreamingModel(tmp_path / "absent.onnx")


def test_onnx_without_metadata_is_refused(tmp_path, contract):
    graph = onnx.load(str(contract))
    del graph.metadata_props[:]
    path = tmp_path / "plain.onnx"
    onnx.save(graph, str(path))
    with pytest.raises(ContractError, match="metadata lacks streamrnn.format_version"):
        StreamingModel(path)


def test_wrong_input_names_are_refused(tmp_path, contract):
    graph = onnx.load(str(contract))
    old = graph.graph.input[0].name
    graph.graph.input[0].name = "pcm"
    for node in graph.graph.node:
        node.input[:] = ["pcm" if i == old else i for i in node.input]
    path = tmp_path / "renamed.onnx"
    onnx.save(graph, str(path))
    with pytest.raises(ContractError, match=r"inputs are \['pcm'"):
        StreamingModel(path)


def _fixed_chunk_copy(contract, tmp_path, samples: int, metadata_chunk: int):
    """A copy whose graph fixes the chunk (as format-1 files from before dynamic chunks did)."""
    graph = onnx.load(str(contract))
    dim = graph.graph.input[0].type.tensor_type.shape.dim[1]
    dim.Clear()
    dim.dim_value = samples
    for prop in graph.metadata_props:
        if prop.key == "streamrnn.chunk":
            prop.value = str(metadata_chunk)
    path = tmp_path / "fixed.onnx"
    onnx.save(graph, str(path))
    return path


def test_wrong_chunk_metadata_is_refused(tmp_path, contract):
    path = _fixed_chunk_copy(contract, tmp_path, 1280, 640)
    with pytest.raises(ContractError, match="takes chunks of 1280 samples but metadata says chunk=640"):
        StreamingModel(path)


def test_any_chunk_size_gives_the_same_scores(contract):
    audio = np.concatenate([clip("yes"), clip("no")])
    default = StreamingModel(contract)
    assert default.chunk == default.info.chunk == 1280
    reference = default.score([audio])[0]
    for frames in (1, 2, 3, 16):
        model = StreamingModel(contract, chunk_frames=frames)
        assert model.chunk == frames * 160
        scores = model.score([audio])[0]
        assert np.abs(scores[: len(reference)] - reference).max() < 1e-5


def test_a_fixed_chunk_graph_refuses_other_chunks(tmp_path, contract):
    path = _fixed_chunk_copy(contract, tmp_path, 1280, 1280)
    assert StreamingModel(path).chunk == 1280
    with pytest.raises(ContractError, match="takes only chunks of 1280 samples, not 2 frames"):
        StreamingModel(path, chunk_frames=2)


def test_streams_come_and_go(contract):
    model = StreamingModel(contract)
    audio = clip("yes")
    for i in range(20):  # more than the initial state capacity
        model.add_stream(i)
        model.feed(i, audio[: 1280 * 2 + i])
    out = model.step()
    assert sorted(out) == list(range(20)) and out[0].shape == (8, 4)
    model.remove_stream(3)
    model.reset_stream(4)
    assert model.pending(4) == 0 and model.stream_frames(4) == 0
    out = model.step()
    assert 3 not in out and 4 not in out and len(out) == 18
    assert model.stream_frames(5) == 16
    with pytest.raises(KeyError, match="already exists"):
        model.add_stream(5)
    with pytest.raises(KeyError, match="no stream"):
        model.feed("nope", audio)
    with pytest.raises(ValueError, match="do not fit"):
        model.feed(5, np.zeros((10, 2), np.float32))
    with pytest.raises(ValueError, match=r"samples of shape \(\) do not fit"):  # a lone number
        model.feed(5, np.float32(0.5))
    before = sorted(model.streams)
    tail, empty = model.score([audio[:100], audio[:0]])  # whole signals beside the open streams
    assert tail.shape == (8, 4) and empty.shape == (0, 4)  # 100 samples padded to one chunk
    assert sorted(model.streams) == before and model.stream_frames(5) == 16


def test_reset_restarts_from_zero_state(contract):
    model = StreamingModel(contract)
    audio = clip("no")[:1280]
    model.add_stream("s")
    model.feed("s", audio)
    first = model.step()["s"]
    model.feed("s", audio)
    assert not np.allclose(model.step()["s"], first)  # state carried
    model.reset_stream("s")
    model.feed("s", audio)
    assert np.allclose(model.step()["s"], first, atol=1e-7)


def test_stereo_44k_file_is_converted(tmp_path):
    mono16 = clip("yes")
    mono44 = read_audio(next(CLIPS.glob("yes_*.flac")), 44100)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([mono44, mono44], axis=1), 44100)
    back = read_audio(path, 16000)
    assert abs(len(back) - len(mono16)) <= 2
    n = min(len(back), len(mono16))
    assert np.corrcoef(back[:n], mono16[:n])[0, 1] > 0.99


def test_unreadable_audio_names_the_file(tmp_path):
    path = tmp_path / "broken.wav"
    path.write_bytes(b"RIFF....WAVEjunk")
    with pytest.raises(AudioError, match="broken.wav: cannot read audio"):
        read_audio(path, 16000)


def test_decider_reports_label_times_and_respects_refractory(contract):
    info = StreamingModel(contract).info
    scores = np.zeros((300, 4), np.float32)
    scores[:, 3] = 1.0
    scores[100:120] = [0.0, 0.95, 0.0, 0.05]  # label b from frame 100
    scores[130:150] = [0.0, 0.95, 0.0, 0.05]  # again within the refractory second
    scores[250:270] = [0.0, 0.95, 0.0, 0.05]  # again after it
    decider = Decider(info, DecisionSettings(smoothing=3, patience=2, refractory=1.0))
    found = decider.update(scores[:105]) + decider.update(scores[105:])
    assert [d.label for d in found] == ["b", "b"]
    first, second = found
    assert first.start == pytest.approx(1.00) and first.end == pytest.approx(1.03)
    assert second.start == pytest.approx(2.50)
    assert first.score > 0.6


def _with_metadata(contract, tmp_path, **values) -> StreamingModel:
    graph = onnx.load(str(contract))
    for prop in graph.metadata_props:
        if prop.key.removeprefix("streamrnn.") in values:
            prop.value = str(values[prop.key.removeprefix("streamrnn.")])
    path = tmp_path / "copy.onnx"
    onnx.save(graph, str(path))
    return StreamingModel(path)


def test_decider_defaults_to_the_models_own_smoothing_and_patience(contract, tmp_path):
    scores = np.tile(np.array([[0.0, 0.0, 0.0, 1.0]], np.float32), (20, 1))
    scores[10] = [0.0, 0.95, 0.0, 0.05]  # one frame of label b
    assert not Decider(StreamingModel(contract).info).update(scores)  # 3 frames smoothed, 2 above
    quick = _with_metadata(contract, tmp_path, smoothing=1, patience=1).info
    assert [d.label for d in Decider(quick).update(scores)] == ["b"]
    assert not Decider(quick, DecisionSettings(smoothing=3, patience=2)).update(scores)  # settings win
    with pytest.raises(ContractError, match="smoothing and patience must be at least 1"):
        _with_metadata(contract, tmp_path, patience=0)


def test_threshold_override_silences_a_label(contract):
    info = StreamingModel(contract).info
    scores = np.tile(np.array([[0.0, 0.7, 0.0, 0.3]], np.float32), (50, 1))
    assert Decider(info).update(scores)
    assert not Decider(info, thresholds={"b": 0.8}).update(scores)


def test_cuda_request_without_provider_is_refused(contract):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(ValueError, match="device 'cuda' requested but onnxruntime has no CUDAExecutionProvider"):
        StreamingModel(contract, device="cuda")


def test_decisions_do_not_depend_on_how_scores_are_cut(contract):
    info = StreamingModel(contract).info
    rng = np.random.default_rng(7)
    scores = rng.dirichlet([0.3, 0.3, 0.3, 0.6], size=3000).astype(np.float32)  # spiky, many firings
    quiet = (np.arange(len(scores)) // 97) % 3 == 0  # stretches where nothing nears a threshold
    scores[quiet] = np.float32(0.001)
    settings = DecisionSettings(smoothing=3, patience=2, refractory=0.05)
    one = Decider(info, settings, near_misses=True)
    whole = one.update(scores)  # one call: never takes the quiet-chunk path
    assert len(whole) > 30 and all(d.start <= d.end for d in whole)
    assert any(quiet[round(d.start / info.frame_seconds) - 1] for d in whole)  # some rise right after quiet
    near = sorted(one.near_misses, key=lambda d: d.end)
    assert len(near) > 10 and all(d.score < 1 and d.start < d.end for d in near)
    assert not {(d.label, d.start) for d in near} & {(d.label, d.start) for d in whole}  # a miss never fired
    for cuts in ([1] * 50 + [7, 13], [8], [3, 999], [2, 1]):
        decider, pieces, at, calls = Decider(info, settings, near_misses=True), [], 0, 0
        while at < len(scores):
            size = cuts[calls % len(cuts)]
            pieces += decider.update(scores[at : at + size])
            at, calls = at + size, calls + 1
        assert pieces == whole
        assert sorted(decider.near_misses, key=lambda d: d.end) == near


def test_a_whole_signal_that_does_not_fit_is_named_by_its_position(contract):
    model = StreamingModel(contract)
    with pytest.raises(ValueError, match=r"^stream signal 1: samples of shape \(100, 3\) do not fit model"):
        model.score([np.zeros(1280, np.float32), np.zeros((100, 3), np.float32)])


def test_a_gate_skips_quiet_chunks_and_scores_speech_as_without_it():
    """A wake word's state settles on quiet within half a second, so a gated stream scores the
    speech after a skipped stretch as an ungated one does; batched streams as each alone."""
    path = resolve_model("computer")
    wake = read_audio(sample("wake.flac"), 16000)
    signals = [wake, np.concatenate([clip("yes"), wake])]
    plain = StreamingModel(path).score(signals)
    gated_model = StreamingModel(path, gate=Gate(-50.0))
    gated = gated_model.score(signals)
    assert gated_model.gated_frames > 0.3 * sum(len(p) for p in plain)
    info = gated_model.info
    for p, g in zip(plain, gated):
        assert p.shape == g.shape and np.abs(p - g).max() < 1e-3
        fired = [[(d.label, d.end) for d in Decider(info).update(s)] for s in (p, g)]
        assert fired[0] == fired[1] and [label for label, _ in fired[0]] == ["computer"]
    assert np.array_equal(StreamingModel(path, gate=Gate(-50.0)).score(signals[1:])[0], gated[1])


def test_a_gate_is_refused_where_it_cannot_work(tmp_path):
    with pytest.raises(ValueError, match=r"^gate level 0.0 dBFS must be below 0$"):
        Gate(0.0)
    with pytest.raises(ValueError, match=r"^gate settle 0 s must be positive$"):
        Gate(-50.0, settle=0)
    sensor = export_test_model(tmp_path, kind="sensor")[2]
    with pytest.raises(ValueError, match=r": a gate needs an audio model, not sensor$"):
        StreamingModel(sensor, gate=Gate(-50.0))
