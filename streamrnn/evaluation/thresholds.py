"""Write thresholds picked on validation audio, or other metadata, into a contract file (needs
onnx, not torch)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx

from streamrnn.contract import PREFIX, encode_metadata


def write_metadata(model: onnx.ModelProto, out: str | Path, values: dict) -> Path:
    """Save `model` to `out` (whole or not at all) with `values` (plain, as encode_metadata takes
    them) in its metadata; other keys stay, and so do the thresholds of labels `values` does not
    give one."""
    props = {p.key: p.value for p in model.metadata_props}
    if "thresholds" in values:
        values = {**values, "thresholds": {**json.loads(props[PREFIX + "thresholds"]), **values["thresholds"]}}
    props.update(encode_metadata(values))
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    out = Path(out)
    tmp = out.with_suffix(".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(out)
    return out


def write_thresholds(path: str | Path, thresholds: dict[str, float]) -> None:
    """Replace the thresholds in a contract file's metadata (other labels keep theirs)."""
    write_metadata(onnx.load(str(path)), path, {"thresholds": thresholds})
