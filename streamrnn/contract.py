"""The ONNX contract: metadata keys, tensor names, and validation of a contract file.

A contract file is one ONNX graph that maps (audio chunk, state) to (per-frame scores,
next state), plus `streamrnn.*` metadata that tells the runtime everything it needs.
Training writes it (streamrnn.deploy.export); the runtime only reads it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT_VERSION = "1"
PREFIX = "streamrnn."
AUDIO_INPUT = "audio"
SCORES_OUTPUT = "scores"
EMBEDDINGS_OUTPUT = "embeddings"  # the encoder's frames, [frames, batch, dim]: files with a check only
WINDOW_INPUT = "window"  # the check's graph: [n, frames, dim] -> probability [n]
PROBABILITY_OUTPUT = "probability"
KINDS = ("audio", "sensor")
CELLS = ("rnn", "lstm", "gru")
READOUTS = ("peak", "mean")
DEVICES = ("cpu", "cuda")  # where onnxruntime may run a contract file


def is_threshold(value: object) -> bool:
    """A label's threshold: a number (not a bool) in [0, 1], compared with its probability."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1


# how a clip's label follows from its frames (see metrics.clip_scores)

# how a metadata string value is decoded, by codec
DECODERS: dict[str, Callable[[str], Any]] = {"str": str, "int": int, "float": float, "json": json.loads}
# key -> its codec
METADATA = {
    "format_version": "str",
    "kind": "str",
    "name": "str",
    "version": "str",
    "labels": "json",
    "background_label": "str",
    "thresholds": "json",
    "sample_rate": "float",
    "chunk": "int",
    "frame_hop": "int",
    "channels": "int",
    "cell": "str",
    "readout": "str",
    "smoothing": "int",
    "clip_seconds": "float",
    "patience": "int",
    "trained_on": "str",
    "created": "str",
    "license": "str",
    "description": "str",
    "check": "json",
}
REQUIRED = (
    "format_version",
    "kind",
    "name",
    "version",
    "labels",
    "background_label",
    "thresholds",
    "sample_rate",
    "chunk",
    "frame_hop",
    "cell",
    "trained_on",
    "created",
)


@dataclass(frozen=True)
class Check:
    """A second look at one label (metadata `check`): on the frames where that label's score
    reaches `start`, a small ONNX graph (`model`, its bytes) reads the encoder's last `frames`
    embeddings and its probability becomes the label's score; on every other frame the score is
    0. The label's threshold applies to that probability."""

    label: str
    start: float
    frames: int
    model: bytes

    def as_dict(self) -> dict:
        return {"label": self.label, "from": self.start, "frames": self.frames, "model_bytes": len(self.model)}

    def encode(self) -> dict:
        """The metadata value (see encode_metadata)."""
        return {
            "label": self.label,
            "from": self.start,
            "frames": self.frames,
            "model": base64.b64encode(self.model).decode(),
        }


class ContractError(ValueError):
    """A file that does not honour the contract; the message names the file and the fault."""


def state_input(i: int) -> str:
    return f"state_{i}"


def state_output(i: int) -> str:
    return f"next_state_{i}"


@dataclass(frozen=True)
class ModelInfo:
    """What the metadata of one contract file says."""

    path: Path
    name: str
    version: str
    kind: str
    labels: tuple[str, ...]
    background_label: str
    thresholds: dict[str, float]
    sample_rate: float
    chunk: int
    frame_hop: int
    channels: int
    cell: str
    trained_on: str
    created: str
    readout: str = "peak"
    clip_seconds: float = 0.0  # the training clips' length (0: not recorded)
    smoothing: int = 3  # the decision defaults this model was tuned with, in frames (older
    patience: int = 2  # files lack the keys: 3 and 2, right for 10-ms frames)
    license: str = ""
    description: str = ""
    check: Check | None = None

    @property
    def frame_seconds(self) -> float:
        return self.frame_hop / self.sample_rate

    def as_dict(self) -> dict:
        record = {k: getattr(self, k) for k in METADATA if k != "format_version"}
        record["labels"] = list(self.labels)
        record["check"] = self.check.as_dict() if self.check else None
        record["path"] = str(self.path)
        return record


def encode_metadata(values: dict) -> dict[str, str]:
    """Turn plain values into `streamrnn.*` metadata strings (used by export)."""
    unknown = set(values) - set(METADATA)
    if unknown:
        raise ValueError(f"unknown metadata keys: {sorted(unknown)}")
    out = {PREFIX + "format_version": FORMAT_VERSION}
    for key, value in values.items():
        out[PREFIX + key] = json.dumps(value) if METADATA[key] == "json" else str(value)
    return out


def parse_metadata(path: Path, props: dict[str, str]) -> ModelInfo:
    """Decode and check `streamrnn.*` metadata; raise ContractError naming the problem."""

    def fail(msg: str):
        raise ContractError(f"{path}: {msg}")

    missing = [PREFIX + k for k in REQUIRED if PREFIX + k not in props]
    if missing:
        fail(f"not a streamrnn contract file: metadata lacks {', '.join(missing)}")
    if props[PREFIX + "format_version"].split(".")[0] != FORMAT_VERSION:
        fail(
            f"contract format {props[PREFIX + 'format_version']} is not supported "
            f"(this runtime reads format {FORMAT_VERSION})"
        )
    values = {}
    for key, codec in METADATA.items():
        raw = props.get(PREFIX + key)
        if raw is None:
            continue
        try:
            values[key] = DECODERS[codec](raw)
        except ValueError:
            fail(f"metadata {PREFIX}{key}={raw!r} is not a valid {codec}")
    labels = values["labels"]
    if not (isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels)):
        fail(f"metadata {PREFIX}labels must be a non-empty JSON list of strings")
    if len(set(labels)) != len(labels):
        fail(f"metadata {PREFIX}labels has duplicates")
    if values["kind"] not in KINDS:
        fail(f"metadata {PREFIX}kind={values['kind']!r} (expected one of {KINDS})")
    if values["cell"] not in CELLS:
        fail(f"metadata {PREFIX}cell={values['cell']!r} (expected one of {CELLS})")
    if values.get("readout", "peak") not in READOUTS:
        fail(f"metadata {PREFIX}readout={values['readout']!r} (expected one of {READOUTS})")
    if values["background_label"] not in labels:
        fail(f"metadata {PREFIX}background_label={values['background_label']!r} is not a label")
    thresholds = values["thresholds"]
    if not isinstance(thresholds, dict) or any(k not in labels or not is_threshold(v) for k, v in thresholds.items()):
        fail(f"metadata {PREFIX}thresholds must map labels to numbers in [0, 1]")
    if values["sample_rate"] <= 0 or values["frame_hop"] <= 0 or values["chunk"] <= 0:
        fail("metadata sample_rate, chunk and frame_hop must be positive")
    if values["chunk"] % values["frame_hop"]:
        fail(f"metadata {PREFIX}chunk={values['chunk']} is not a multiple of frame_hop={values['frame_hop']}")
    if values.get("smoothing", 1) < 1 or values.get("patience", 1) < 1:
        fail("metadata smoothing and patience must be at least 1")
    if "check" in values:
        values["check"] = _parse_check(values["check"], labels, fail)
    values.setdefault("channels", 1)
    values.pop("format_version")
    values["labels"] = tuple(labels)
    values["thresholds"] = {k: float(v) for k, v in thresholds.items()}
    return ModelInfo(path=path, **values)


def _parse_check(value: object, labels: list[str], fail: Callable[[str], None]) -> Check:
    """The metadata `check` value: {"label", "from", "frames", "model" (base64)}."""
    key = f"metadata {PREFIX}check"
    if not isinstance(value, dict) or set(value) != {"label", "from", "frames", "model"}:
        fail(f"{key} must be a JSON object with label, from, frames and model")
    assert isinstance(value, dict)
    if value["label"] not in labels:
        fail(f"{key} names label {value['label']!r}, which the model lacks")
    if not is_threshold(value["from"]):
        fail(f"{key} from={value['from']!r} must be a number in [0, 1]")
    if not (isinstance(value["frames"], int) and value["frames"] >= 1):
        fail(f"{key} frames={value['frames']!r} must be a whole number of at least 1")
    try:
        model = base64.b64decode(value["model"], validate=True)
    except (TypeError, ValueError):
        fail(f"{key} model is not base64")
    return Check(value["label"], float(value["from"]), value["frames"], model)


def check_signature(info: ModelInfo, inputs, outputs) -> int:
    """Check graph inputs/outputs (onnxruntime NodeArg lists) against the contract: a file with
    a check also outputs the encoder's frames (`embeddings`) last.

    Returns the number of state tensors.
    """

    def fail(msg: str):
        raise ContractError(f"{info.path}: {msg}")

    in_names = [i.name for i in inputs]
    out_names = [o.name for o in outputs]
    n_states = len(in_names) - 1
    want_in = [AUDIO_INPUT] + [state_input(i) for i in range(n_states)]
    want_out = [SCORES_OUTPUT] + [state_output(i) for i in range(n_states)]
    if info.check:
        want_out.append(EMBEDDINGS_OUTPUT)
    if in_names != want_in:
        fail(f"inputs are {in_names}, expected {want_in}")
    if out_names != want_out:
        fail(f"outputs are {out_names}, expected {want_out}")
    audio = inputs[0]
    rank = 2 if info.kind == "audio" else 3
    if audio.type != "tensor(float)" or len(audio.shape) != rank:
        fail(f"input {AUDIO_INPUT} is {audio.type} {audio.shape}, expected float32 of rank {rank}")
    if isinstance(audio.shape[1], int) and audio.shape[1] != info.chunk:
        fail(f"input {AUDIO_INPUT} takes chunks of {audio.shape[1]} samples but metadata says chunk={info.chunk}")
    if rank == 3 and audio.shape[2] != info.channels:
        fail(f"input {AUDIO_INPUT} has {audio.shape[2]} channels, metadata says {info.channels}")
    scores = outputs[0]
    if len(scores.shape) != 3 or scores.shape[2] != len(info.labels):
        fail(f"output {SCORES_OUTPUT} has shape {scores.shape}, expected [batch, frames, {len(info.labels)}]")
    if info.check and (len(outputs[-1].shape) != 3 or not isinstance(outputs[-1].shape[2], int)):
        fail(
            f"output {EMBEDDINGS_OUTPUT} has shape {outputs[-1].shape}, expected [frames, batch, dim] with a fixed dim"
        )
    for i in range(n_states):
        a, b = inputs[i + 1], outputs[i + 1]
        if a.type != "tensor(float)" or b.type != "tensor(float)":
            fail(f"state {a.name}/{b.name} must be float32")
        if list(a.shape[1:]) != list(b.shape[1:]) or any(not isinstance(d, int) for d in a.shape[1:]):
            fail(f"state {a.name} {a.shape} and {b.name} {b.shape} must have the same fixed shape after the batch axis")
    return n_states


def check_window_signature(info: ModelInfo, inputs, outputs, dim: int) -> None:
    """Check the check graph's inputs/outputs: `window` [n, frames, dim] -> `probability` [n]."""
    assert info.check
    if [i.name for i in inputs] != [WINDOW_INPUT] or [o.name for o in outputs] != [PROBABILITY_OUTPUT]:
        raise ContractError(
            f"{info.path}: the check's graph maps {[i.name for i in inputs]} to {[o.name for o in outputs]}, "
            f"expected [{WINDOW_INPUT!r}] to [{PROBABILITY_OUTPUT!r}]"
        )
    shape = inputs[0].shape
    if len(shape) != 3 or list(shape[1:]) != [info.check.frames, dim]:
        raise ContractError(
            f"{info.path}: the check's input {WINDOW_INPUT} is {shape}, expected [n, {info.check.frames}, {dim}]"
        )
