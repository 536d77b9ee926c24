"""The lean graph of a model on the speech encoder: the same function as the traced export, in
under a third of the operators.

The graph is written by hand from the trained weights instead of traced: no Shape/Gather/Cast
chains rebuild shapes; the log-mel's DFT stages are each one product over all streams and
frames, with no transpose between them, and the mel matrix sums the squared real and imaginary
parts itself (a learned filterbank is one strided Conv instead); and every affine step (the
encoder's input normalisation, its output layer, the embedding's rescaling and the head's
normalisation) is folded, in double precision, into the weights of the GRU that follows it. The
contract (inputs, outputs, states) is unchanged.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from streamrnn.contract import AUDIO_INPUT, SCORES_OUTPUT, state_input, state_output
from streamrnn.training.frontend import FilterBank, LogMel
from streamrnn.training.model import StreamingRNN
from streamrnn.training.student import StudentEncoder


def lean_applies(model: StreamingRNN) -> bool:
    """Whether `model` has the shape this graph writes: the student encoder, a GRU head, no context."""
    return isinstance(model.frontend, StudentEncoder) and model.cell == "gru" and model.context is None


def _array(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def _gru(rnn: torch.nn.GRU, layer: int, fold: tuple[np.ndarray, np.ndarray] | None = None) -> list[np.ndarray]:
    """ONNX W, R, B of one layer (gates z, r, h; torch orders r, z, n). `fold` (A, c): the layer's
    input is A x + c, folded into W and the input bias so the layer takes x."""
    w, r = _array(getattr(rnn, f"weight_ih_l{layer}")), _array(getattr(rnn, f"weight_hh_l{layer}"))
    wb, rb = _array(getattr(rnn, f"bias_ih_l{layer}")), _array(getattr(rnn, f"bias_hh_l{layer}"))
    if fold is not None:
        a, c = fold
        w, wb = w @ a, wb + w @ c
    hidden = r.shape[1]
    order = np.concatenate([np.arange(hidden, 2 * hidden), np.arange(hidden), np.arange(2 * hidden, 3 * hidden)])
    return [w[order][None], r[order][None], np.concatenate([wb[order], rb[order]])[None]]


def lean_graph(model: StreamingRNN, n_labels: int, opset: int) -> onnx.ModelProto:
    """The contract graph of `model`: chunks of any whole number of 80-ms frames."""
    encoder = model.frontend
    assert isinstance(encoder, StudentEncoder)
    rnn, head = encoder.rnn, model.rnn
    hidden, layers, h_hidden, h_layers = rnn.hidden_size, rnn.num_layers, head.hidden_size, head.num_layers
    front = _filterbank if isinstance(encoder.mel, FilterBank) else _log_mel
    front_nodes, weights = front(encoder)

    # (frames - mean) / std, stacked, folded into the encoder's first layer
    mean = np.tile(_array(encoder.norm.mean), encoder.stack)
    scale = np.diag(1 / np.tile(_array(encoder.norm.std), encoder.stack))
    encoder_first = _gru(rnn, 0, (scale, -scale @ mean))
    # out layer, rescaling into the teacher's units and the head's normalisation: one affine map
    # from the encoder's last layer, folded into the head's first layer
    std_h, mean_h = _array(model.norm.std), _array(model.norm.mean)
    target_std, target_mean = _array(encoder.target_std), _array(encoder.target_mean)
    affine = (target_std / std_h)[:, None] * _array(encoder.out.weight)
    offset = (_array(encoder.out.bias) * target_std + target_mean - mean_h) / std_h
    head_first = _gru(head, 0, (affine, offset))

    weights |= {
        "context": np.array([-encoder.mel.context]),
        "end": np.array([np.iinfo(np.int64).max]),
        "axis0": np.array([0]),
        "axis1": np.array([1]),
        "embedding_start": np.array([encoder.steps_per_embedding - 1]),
        "embedding_step": np.array([encoder.steps_per_embedding]),
        "head_weight": _array(model.head.weight).T,
        "head_bias": _array(model.head.bias),
    }
    for i, arrays in enumerate([encoder_first] + [_gru(rnn, k) for k in range(1, layers)]):
        weights.update(zip((f"enc{i}_W", f"enc{i}_R", f"enc{i}_B"), arrays))
    for i, arrays in enumerate([head_first] + [_gru(head, k) for k in range(1, h_layers)]):
        weights.update(zip((f"head{i}_W", f"head{i}_R", f"head{i}_B"), arrays))
    initializers = [
        numpy_helper.from_array(v.astype(np.int64 if v.dtype.kind == "i" else np.float32), k)
        for k, v in weights.items()
    ]

    node = helper.make_node
    nodes = [
        node("Concat", [state_input(0), AUDIO_INPUT], ["signal"], axis=1),
        node("Slice", ["signal", "context", "end", "axis1"], [state_output(0)]),
        *front_nodes,
    ]
    nodes += _gru_stack("enc", "encoder_in", state_input(1), state_output(1), layers, hidden)
    if encoder.steps_per_embedding == 1:
        nodes.append(node("Identity", ["enc_out"], ["head_in"]))
    else:
        nodes.append(
            node("Slice", ["enc_out", "embedding_start", "end", "axis0", "embedding_step"], ["head_in"])
        )  # the steps where the encoder emits: [embeddings, B, hidden]
    nodes += _gru_stack("head", "head_in", state_input(2), state_output(2), h_layers, h_hidden)
    nodes += [
        node("Transpose", ["head_out"], ["head_frames"], perm=[1, 0, 2]),  # [B, embeddings, hidden]
        node("MatMul", ["head_frames", "head_weight"], ["logits_bare"]),
        node("Add", ["logits_bare", "head_bias"], ["logits"]),
        node("Softmax", ["logits"], [SCORES_OUTPUT], axis=-1),
    ]
    states = [["batch", encoder.mel.context], ["batch", layers, hidden], ["batch", h_layers, h_hidden]]
    value = helper.make_tensor_value_info
    inputs = [value(AUDIO_INPUT, TensorProto.FLOAT, ["batch", "samples"])]
    inputs += [value(state_input(i), TensorProto.FLOAT, shape) for i, shape in enumerate(states)]
    outputs = [value(SCORES_OUTPUT, TensorProto.FLOAT, ["batch", "frames", n_labels])]
    outputs += [value(state_output(i), TensorProto.FLOAT, shape) for i, shape in enumerate(states)]
    graph = helper.make_graph(nodes, "streamrnn", inputs, outputs, initializers)
    model_proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="streamrnn")
    onnx.checker.check_model(model_proto, full_check=True)
    return model_proto


def _log_mel(encoder: StudentEncoder) -> tuple[list, dict[str, np.ndarray]]:
    """The log-mel of `signal` stacked into the encoder's steps, `encoder_in` [steps, B, stack * mels]:
    stage 1's rows ordered (k1, re|im), so a reshape of its product gives stage 2 its k1 groups;
    the mel matrix takes the squared real and imaginary parts alike (it sums them)."""
    mel = encoder.mel
    assert isinstance(mel, LogMel)
    p, q, k2 = mel.p, mel.q, mel.k2_count
    n_mels = mel.mel.shape[1]
    stage1 = _array(mel.stage1).reshape(2, p, p).transpose(1, 0, 2).reshape(2 * p, p)
    mel_matrix = np.repeat(_array(mel.mel).reshape(p, 1, k2, n_mels), 2, axis=1).reshape(p, 2 * k2, n_mels)
    stage2 = _array(mel.stage2)  # [k1, (re|im, n2), (re|im, k2)]
    weights = {
        "hop": np.array([mel.hop]),
        "pads": np.array([0, mel.pad, 0, 0]),
        "rows_shape": np.array([0, -1, q]),
        "zero": np.array(0),
        "one": np.array(1),
        "rows_per_hop": np.array(mel.hop // q),
        "frame_rows": np.arange(p)[:, None],  # [p, 1]
        "hann": _array(mel.hann)[:, None, None, :],  # [n1, 1, 1, n2]
        "stage1_in_shape": np.array([p, -1]),
        "stage1": stage1,
        "stage2_in_shape": np.array([p, 2, -1, q]),
        "stage2_real": stage2[:, None, :q],  # [k1, 1, n2, (re|im, k2)]
        "stage2_imaginary": stage2[:, None, q:],
        "mel": mel_matrix[:, None],
        "axes01": np.array([0, 1]),
        "floor": np.array([1e-6]),
        "stack_head": np.array([-1, encoder.stack]),
        "stack_tail": np.array([n_mels]),
        "encoder_in_shape": np.array([0, 0, encoder.stack * n_mels]),
    }
    node = helper.make_node
    nodes = [
        node("Shape", [AUDIO_INPUT], ["samples"], start=1, end=2),
        node("Div", ["samples", "hop"], ["frame_count"]),
        node("Squeeze", ["frame_count"], ["frames"]),
        node("Range", ["zero", "frames", "one"], ["frame_index"]),
        node("Mul", ["frame_index", "rows_per_hop"], ["first_rows"]),
        node("Add", ["first_rows", "frame_rows"], ["rows_of_frames"]),  # [p, frames]: the rows of each frame
        node("Pad", ["signal", "pads"], ["padded"]),
        node("Reshape", ["padded", "rows_shape"], ["rows"]),  # [B, rows, q]
        node("Transpose", ["rows"], ["rows_first"], perm=[1, 0, 2]),  # [rows, B, q]
        node("Gather", ["rows_first", "rows_of_frames"], ["framed"], axis=0),  # [p, frames, B, q]
        node("Mul", ["framed", "hann"], ["windowed"]),
        node("Reshape", ["windowed", "stage1_in_shape"], ["stage1_in"]),  # [p, frames * B * q]
        node("MatMul", ["stage1", "stage1_in"], ["half"]),  # one product: [(k1, re|im), frames * B * q]
        node("Reshape", ["half", "stage2_in_shape"], ["stage2_in"]),  # [k1, re|im, frames * B, q]
        node("Split", ["stage2_in"], ["real_in", "imaginary_in"], axis=1),
        node("MatMul", ["real_in", "stage2_real"], ["from_real"]),  # [k1, 1, frames * B, (re|im, k2)]
        node("MatMul", ["imaginary_in", "stage2_imaginary"], ["from_imaginary"]),
        node("Add", ["from_real", "from_imaginary"], ["spectrum"]),
        node("Mul", ["spectrum", "spectrum"], ["squares"]),
        node("MatMul", ["squares", "mel"], ["mel_by_k1"]),  # [k1, 1, frames * B, mels]
        node("ReduceSum", ["mel_by_k1", "axes01"], ["mel_power"], keepdims=0),  # [frames * B, mels]
        node("Add", ["mel_power", "floor"], ["mel_floored"]),
        node("Log", ["mel_floored"], ["log_mel"]),
        node("Shape", [AUDIO_INPUT], ["batch"], end=1),
        node("Concat", ["stack_head", "batch", "stack_tail"], ["stack_shape"], axis=0),
        node("Reshape", ["log_mel", "stack_shape"], ["by_step"]),  # [steps, stack, B, mels]
        node("Transpose", ["by_step"], ["stacked"], perm=[0, 2, 1, 3]),  # [steps, B, stack, mels]
        node("Reshape", ["stacked", "encoder_in_shape"], ["encoder_in"]),  # [steps, B, stack * mels]
    ]
    return nodes, weights


def _filterbank(encoder: StudentEncoder) -> tuple[list, dict[str, np.ndarray]]:
    """The learned filterbank of `signal` stacked into the encoder's steps, `encoder_in`
    [steps, B, stack * bands]: one strided Conv, its squares summed per band, the log."""
    bank = encoder.mel
    assert isinstance(bank, FilterBank)
    weights = {
        "filters": _array(bank.filters),  # [(band, re|im), 1, window]
        "band_pairs": np.array([0, bank.bands, 2, -1]),
        "axis2": np.array([2]),
        "floor": np.array([1e-6]),
        "by_step": np.array([0, bank.bands, -1, encoder.stack]),
        "encoder_in_shape": np.array([0, 0, -1]),
    }
    node = helper.make_node
    nodes = [
        node("Unsqueeze", ["signal", "axis1"], ["signal_1"]),  # [B, 1, samples]
        node("Conv", ["signal_1", "filters"], ["bands"], strides=[bank.hop]),  # [B, (band, re|im), frames]
        node("Mul", ["bands", "bands"], ["squares"]),
        node("Reshape", ["squares", "band_pairs"], ["by_band"]),  # [B, band, re|im, frames]
        node("ReduceSum", ["by_band", "axis2"], ["power"], keepdims=0),  # [B, band, frames]
        node("Add", ["power", "floor"], ["floored"]),
        node("Log", ["floored"], ["log_power"]),
        node("Reshape", ["log_power", "by_step"], ["by_step_4d"]),  # [B, band, steps, stack]
        node("Transpose", ["by_step_4d"], ["stacked"], perm=[2, 0, 3, 1]),  # [steps, B, stack, band]
        node("Reshape", ["stacked", "encoder_in_shape"], ["encoder_in"]),  # [steps, B, stack * band]
    ]
    return nodes, weights


def _gru_stack(prefix: str, x: str, state: str, next_state: str, layers: int, hidden: int) -> list:
    """A stack of ONNX GRU layers over x [steps, B, features] from state [B, layers, hidden]:
    `{prefix}_out` [steps, B, hidden] and the next state."""
    node = helper.make_node
    nodes = [
        node("Transpose", [state], [f"{prefix}_h"], perm=[1, 0, 2]),
        node("Split", [f"{prefix}_h"], [f"{prefix}_h{i}" for i in range(layers)], axis=0)
        if layers > 1
        else node("Identity", [f"{prefix}_h"], [f"{prefix}_h0"]),
    ]
    for i in range(layers):
        out = f"{prefix}_out" if i == layers - 1 else f"{prefix}_y{i}"
        nodes += [
            node(
                "GRU",
                [x, f"{prefix}{i}_W", f"{prefix}{i}_R", f"{prefix}{i}_B", "", f"{prefix}_h{i}"],
                [f"{prefix}_y4d{i}", f"{prefix}_last{i}"],
                hidden_size=hidden,
                linear_before_reset=1,
            ),
            node("Squeeze", [f"{prefix}_y4d{i}", "axis1"], [out]),  # [steps, 1, B, H] -> [steps, B, H]
        ]
        x = out
    nodes += [
        node("Concat", [f"{prefix}_last{i}" for i in range(layers)], [f"{prefix}_last"], axis=0),
        node("Transpose", [f"{prefix}_last"], [next_state], perm=[1, 0, 2]),
    ]
    return nodes
