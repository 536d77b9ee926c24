"""streamrnn: streaming recognition with stateful recurrent networks, served over ZeroMQ.

The public surface: `StreamingModel` (a contract file served to many streams in batched calls),
`Decider` (one stream's scores -> detections) and its `DecisionSettings`, `resolve_model` (a
bundled name or a path -> the file), `subscribe` (a service's events), `__version__`. The layout
of the package is in docs/architecture.md; a device that only recognizes uses this and `streamrnn.service`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamrnn.catalog import resolve_model
    from streamrnn.client import subscribe
    from streamrnn.decision import Decider, DecisionSettings
    from streamrnn.runtime import StreamingModel

__all__ = ["Decider", "DecisionSettings", "StreamingModel", "__version__", "resolve_model", "subscribe"]
_HOMES = {
    "Decider": "streamrnn.decision",
    "DecisionSettings": "streamrnn.decision",
    "StreamingModel": "streamrnn.runtime",
    "resolve_model": "streamrnn.catalog",
    "subscribe": "streamrnn.client",
}


def __getattr__(name: str):
    """The public names, imported when first used: `import streamrnn` stays light (numpy,
    onnxruntime and pyzmq load only when a command needs them, after `serve` has taken over its
    signals in streamrnn/__main__.py)."""
    if name == "__version__":
        return importlib.import_module("importlib.metadata").version("streamrnn")
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'streamrnn' has no attribute {name!r}")
