"""streamrnn: streaming recognition with stateful recurrent networks, served over ZeroMQ.

The public surface: `StreamingModel` (a contract file served to many streams in batched calls),
`Decider` (one stream's scores -> detections), `resolve_model` (a bundled name or a path -> the
file), `subscribe` (a service's events), `__version__`. The layout of the package is in the
README; a device that only recognizes uses this and `streamrnn.service`.
"""

from importlib.metadata import version

from streamrnn.catalog import resolve_model
from streamrnn.client import subscribe
from streamrnn.decision import Decider
from streamrnn.runtime import StreamingModel

__version__ = version("streamrnn")
__all__ = ["Decider", "StreamingModel", "__version__", "resolve_model", "subscribe"]
