"""Event records: the JSON objects the service publishes and `streamrnn detect` prints.

Every event carries the same keys (null where they do not apply), then its kind's own keys.
The schema is `streamrnn/event.schema.json`; topics allow prefix filtering by kind and stream.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from streamrnn.contract import ModelInfo
from streamrnn.decision import Detection

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("event.schema.json")
COMMON_KEYS = ("schema", "kind", "stream", "model", "model_version", "label", "score", "start", "end")


def _event(kind: str, **fields) -> dict:
    event = dict.fromkeys(COMMON_KEYS)
    event.update(schema=SCHEMA_VERSION, kind=kind, **fields)
    return event


def detection_event(stream: str, info: ModelInfo, detection: Detection) -> dict:
    """A detection as an unstamped event (no `time`/`seq` yet)."""
    return _event(
        "detection",
        stream=stream,
        model=info.name,
        model_version=info.version,
        label=detection.label,
        score=round(detection.score, 6),
        start=round(detection.start, 4),
        end=round(detection.end, 4),
    )


def scores_event(stream: str, info: ModelInfo, end: float, scores: np.ndarray) -> dict:
    """One frame's scores of a stream: the top label and every label's probability."""
    top = int(np.argmax(scores))
    return _event(
        "scores",
        stream=stream,
        model=info.name,
        model_version=info.version,
        label=info.labels[top],
        score=round(float(scores[top]), 6),
        end=round(end, 4),
        scores=dict(zip(info.labels, np.round(scores.astype(float), 5).tolist())),
    )


def heartbeat_event(stats: dict) -> dict:
    return _event("heartbeat", **stats)


def status_event(state: str, message: str, stats: dict) -> dict:
    return _event("status", state=state, message=message, **stats)


def topic(event: dict) -> str:
    """`detection.<stream>.<label>`, `scores.<stream>`, `status`, `heartbeat`."""
    kind = event["kind"]
    if kind == "detection":
        return f"detection.{event['stream']}.{event['label']}"
    if kind == "scores":
        return f"scores.{event['stream']}"
    return kind


def encode(event: dict) -> list[bytes]:
    """The wire form: multipart [topic, JSON]."""
    return [topic(event).encode(), json.dumps(event, separators=(",", ":")).encode()]


class Stamper:
    """Gives each event the wall-clock `time` and this publisher's next `seq` number."""

    def __init__(self):
        self._seq = itertools.count()

    def stamp(self, event: dict) -> dict:
        return {**event, "time": datetime.now(UTC).isoformat(timespec="milliseconds"), "seq": next(self._seq)}
