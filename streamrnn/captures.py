"""How captured detections lie on disk: the service's capture writer lays them out, `streamrnn
review` reads them. Each is a FLAC and a JSON sidecar of one name in the capture folder, near
misses in its NEAR_MISSES subfolder."""

from __future__ import annotations

import re

NEAR_MISSES = "near-misses"


def safe_name(text: str) -> str:
    """`text` as a file name: letters, digits, _, + and -, anything else a -."""
    return re.sub(r"[^A-Za-z0-9_+-]", "-", text)
