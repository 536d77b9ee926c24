"""A second look in a contract file (contract.Check): the check's graph, the file's encoder frames
as an output, and the file that carries both (needs onnx, not torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from streamrnn.contract import EMBEDDINGS_OUTPUT, PROBABILITY_OUTPUT, WINDOW_INPUT, Check, ContractError
from streamrnn.evaluation.thresholds import write_metadata

ENCODER_FRAMES = "head_in"  # the lean graph's encoder frames, [frames, batch, dim] (deploy/lean.py)
OPSET = 17


def window_graph(hidden_weight: np.ndarray, hidden_bias: np.ndarray, out_weight: np.ndarray, out_bias: float) -> bytes:
    """A one-hidden-layer classifier (ReLU, then a sigmoid) on windows [n, frames, dim], as ONNX
    bytes; `hidden_weight` is [hidden, frames, dim], `out_weight` [hidden]."""
    hidden, frames, dim = hidden_weight.shape
    weights: dict[str, np.ndarray] = {
        "flat_shape": np.array([-1, frames * dim], np.int64),
        "hidden_weight": hidden_weight.reshape(hidden, frames * dim).astype(np.float32),
        "hidden_bias": hidden_bias.astype(np.float32),
        "out_weight": out_weight.reshape(1, hidden).astype(np.float32),
        "out_bias": np.array([out_bias], np.float32),
        "probability_shape": np.array([-1], np.int64),
    }
    node = helper.make_node
    nodes = [
        node("Reshape", [WINDOW_INPUT, "flat_shape"], ["flat"]),
        node("Gemm", ["flat", "hidden_weight", "hidden_bias"], ["hidden_in"], transB=1),
        node("Relu", ["hidden_in"], ["hidden_out"]),
        node("Gemm", ["hidden_out", "out_weight", "out_bias"], ["logit"], transB=1),
        node("Sigmoid", ["logit"], ["probability_column"]),
        node("Reshape", ["probability_column", "probability_shape"], [PROBABILITY_OUTPUT]),
    ]
    graph = helper.make_graph(
        nodes,
        "streamrnn_check",
        [helper.make_tensor_value_info(WINDOW_INPUT, TensorProto.FLOAT, ["n", frames, dim])],
        [helper.make_tensor_value_info(PROBABILITY_OUTPUT, TensorProto.FLOAT, ["n"])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="streamrnn")
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def with_embeddings(path: str | Path) -> onnx.ModelProto:
    """The contract file's graph with its encoder frames as one more output, last: `embeddings`
    [frames, batch, dim], the very tensor its head reads (no node added, so no cost added)."""
    model = onnx.load(str(path))
    graph = model.graph
    if any(o.name == EMBEDDINGS_OUTPUT for o in graph.output):
        return model
    produced = {name for n in graph.node for name in n.output}
    if not produced & {ENCODER_FRAMES, EMBEDDINGS_OUTPUT}:
        raise ContractError(f"{path}: no encoder frames to look at (only models on the speech encoder have them)")
    for n in graph.node:
        for names in (n.input, n.output):
            for i, name in enumerate(names):
                if name == ENCODER_FRAMES:
                    names[i] = EMBEDDINGS_OUTPUT
    dim = next(numpy_helper.to_array(t).shape[2] for t in graph.initializer if t.name == "head0_W")
    graph.output.append(helper.make_tensor_value_info(EMBEDDINGS_OUTPUT, TensorProto.FLOAT, ["frames", "batch", dim]))
    return model


def write_check(path: str | Path, out: str | Path, check: Check, threshold: float, version: str = "") -> Path:
    """Write `path`'s contract file to `out` with `check` and the threshold for its label (which
    applies to the check's probability), and `version` if given."""
    values = {"thresholds": {check.label: threshold}, "check": check.encode()}
    return write_metadata(with_embeddings(path), out, values | ({"version": version} if version else {}))
