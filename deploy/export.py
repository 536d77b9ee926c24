"""Export a trained StreamingRNN to a contract file: one ONNX graph plus `streamrnn.*` metadata."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime
from pathlib import Path

import onnx
import torch
from torch import nn

from streamrnn.contract import AUDIO_INPUT, SCORES_OUTPUT, encode_metadata, state_input, state_output
from streamrnn.deploy.lean import lean_applies, lean_graph
from streamrnn.recipe.schema import Recipe
from streamrnn.training.checkpoint import load_checkpoint
from streamrnn.training.model import StreamingRNN

OPSET = 17
SMOOTHING_SECONDS, PATIENCE_SECONDS = 0.03, 0.02  # the decision defaults written into each model


def decision_frames(frame_seconds: float) -> tuple[int, int]:
    """Smoothing and patience in frames for a model's frame length: 30 ms and 20 ms, at least one
    frame each (3 and 2 for 10-ms log-mel frames, 1 and 1 for the encoder's 80-ms frames)."""
    return (max(1, round(SMOOTHING_SECONDS / frame_seconds)), max(1, round(PATIENCE_SECONDS / frame_seconds)))


class ContractGraph(nn.Module):
    """(audio, *state) -> (per-frame probabilities, *next state): the graph the contract names."""

    def __init__(self, model: StreamingRNN):
        super().__init__()
        self.model = model

    def forward(self, audio, *state):
        logits, next_state = self.model(audio, list(state))
        return (torch.softmax(logits, dim=-1), *next_state)


def export_model(
    model: StreamingRNN,
    recipe: Recipe,
    labels: list[str],
    path: str | Path,
    thresholds: dict[str, float],
    trained_on: str,
) -> Path:
    """Write the contract file for `model`: chunks of any whole number of frames, recipe.model.chunk
    frames by default (metadata `chunk`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    chunk = recipe.model.chunk * model.frame_hop
    if lean_applies(model):  # the speech encoder's models: written by hand, a third of the operators
        graph = lean_graph(model, len(labels), OPSET)
    else:
        graph = _traced_graph(model, recipe, chunk, path)
        _declare_output_shapes(graph, len(labels))
    smoothing, patience = decision_frames(model.frame_hop / recipe.data.sample_rate)
    metadata = encode_metadata(
        {
            "kind": recipe.data.kind,
            "name": recipe.name,
            "version": recipe.version,
            "labels": labels,
            "background_label": recipe.data.background_label,
            "thresholds": thresholds,
            "sample_rate": recipe.data.sample_rate,
            "chunk": chunk,
            "frame_hop": model.frame_hop,
            "channels": recipe.data.channels,
            "cell": recipe.model.cell,
            "readout": model.readout,
            "smoothing": smoothing,
            "patience": patience,
            "clip_seconds": recipe.data.clip_seconds,
            "trained_on": trained_on,
            "license": _license(recipe, model),
            "description": recipe.description,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )
    onnx.helper.set_model_props(graph, metadata)
    onnx.save(graph, str(path))
    return path


def _traced_graph(model: StreamingRNN, recipe: Recipe, chunk: int, path: Path) -> onnx.ModelProto:
    """The model traced by torch.onnx on `chunk` samples (written to `path`, then read back)."""
    shape = (1, chunk) if recipe.data.kind == "audio" else (1, chunk, recipe.data.channels)
    state = model.zero_state(1)
    inputs = [AUDIO_INPUT] + [state_input(i) for i in range(len(state))]
    outputs = [SCORES_OUTPUT] + [state_output(i) for i in range(len(state))]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and RNN notes
        # The TorchScript-based exporter writes native ONNX GRU/LSTM/RNN ops; the dynamo
        # exporter cannot trace these cells with a dynamic batch.
        torch.onnx.export(
            ContractGraph(model),
            (torch.zeros(shape), *state),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes={name: {0: "batch"} for name in inputs + outputs}
            | {AUDIO_INPUT: {0: "batch", 1: "samples"}, SCORES_OUTPUT: {0: "batch", 1: "frames"}},
        )
    return onnx.load(str(path))


def _license(recipe: Recipe, model: StreamingRNN) -> str:
    """The recipe's licence text, with the speech encoder's attribution where the model uses it."""
    attribution = getattr(model.frontend, "attribution", "")
    if not attribution or attribution in recipe.license:
        return recipe.license
    return "; ".join(x for x in (recipe.license, attribution) if x)


def _declare_output_shapes(graph: onnx.ModelProto, n_labels: int) -> None:
    """Write the contract's output shapes into the graph: scores [batch, frames, labels], each
    next state shaped as its state input (the exporter leaves some of these symbolic)."""
    shapes = {SCORES_OUTPUT: ["batch", "frames", n_labels]}
    for value in graph.graph.input[1:]:
        dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        shapes["next_" + value.name] = dims
    for value in graph.graph.output:
        dims = value.type.tensor_type.shape.dim
        del dims[:]
        for size in shapes[value.name]:
            dim = dims.add()
            if isinstance(size, str):
                dim.dim_param = size
            else:
                dim.dim_value = size


def export_checkpoint(
    checkpoint_path: str | Path, out: str | Path | None = None, chunk_frames: int | None = None
) -> Path:
    """`streamrnn export`: a checkpoint to a contract file (thresholds as chosen in training)."""
    model, recipe, checkpoint = load_checkpoint(checkpoint_path)
    if chunk_frames:
        recipe.model.chunk = chunk_frames
    labels = list(checkpoint["labels"])
    thresholds = dict(checkpoint.get("thresholds") or dict.fromkeys(recipe.reported(labels), 0.5))
    out = Path(out) if out else Path(checkpoint_path).with_suffix(".onnx")
    return export_model(model, recipe, labels, out, thresholds, checkpoint.get("trained_on", "unknown"))
