"""Event records: the JSON objects the service publishes and `streamrnn detect` prints."""

from __future__ import annotations

import itertools
from datetime import datetime, timezone

from .contract import ModelInfo
from .decision import Detection

SCHEMA_VERSION = 1


def detection_event(stream: str, info: ModelInfo, detection: Detection) -> dict:
    """A detection as an unstamped event (no `time`/`seq` yet)."""
    return {
        "schema": SCHEMA_VERSION,
        "kind": "detection",
        "stream": stream,
        "model": info.name,
        "model_version": info.version,
        "label": detection.label,
        "score": round(detection.score, 6),
        "start": round(detection.start, 4),
        "end": round(detection.end, 4),
    }


class Stamper:
    """Gives each event the wall-clock `time` and this publisher's next `seq` number."""

    def __init__(self):
        self._seq = itertools.count()

    def stamp(self, event: dict) -> dict:
        return {**event, "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                "seq": next(self._seq)}
