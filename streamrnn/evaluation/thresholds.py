"""Write thresholds picked on validation audio into a contract file's metadata (needs onnx, not torch)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx

from streamrnn.contract import PREFIX


def write_thresholds(path: str | Path, thresholds: dict[str, float]) -> None:
    """Replace the thresholds in a contract file's metadata (other labels keep theirs)."""
    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    key = PREFIX + "thresholds"
    props[key] = json.dumps({**json.loads(props[key]), **thresholds})
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    tmp = Path(path).with_suffix(".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(path)
