"""The wire format: events and ingest messages written and read back, and the JSON Schema
checked against the event records."""

from __future__ import annotations

import json
from dataclasses import fields

import numpy as np
import pytest

from conftest import EVENT_SCHEMA, ROOT
from streamrnn.decision import Detection
from streamrnn.ingest_format import IngestHeader, IngestLimits, Reject, ingest_message, parse_ingest
from streamrnn.runtime import StreamingModel
from streamrnn.wire import (
    EVENT_KINDS,
    BadEvent,
    DetectionEvent,
    Event,
    HeartbeatEvent,
    ScoresEvent,
    Stamper,
    StatusEvent,
    decode,
)

INFO = StreamingModel(ROOT / "streamrnn" / "models" / "commands.onnx").info
STATS = dict(uptime=1.5, streams=2, frames=300, events=4, drops=0, subscribers=1, problems={"ingest_bad_rate": 3})


def one_of_each() -> list[Event]:
    scores = np.full(len(INFO.labels), 0.01, np.float32)
    scores[3] = 1 - 0.01 * (len(scores) - 1)
    return [
        DetectionEvent.of("kitchen", INFO, Detection("yes", 0.93, 1.2, 1.9)),
        ScoresEvent.of("kitchen", INFO, 2.0, scores),
        HeartbeatEvent(**STATS),
        StatusEvent(state="running", message="ok", sources={"pull:ipc://x": "running"}, models=[], **STATS),
    ]


def test_every_event_reads_back_as_it_was_sent_and_fits_the_schema():
    stamper = Stamper()
    for event in map(stamper.stamp, one_of_each()):
        topic, back = decode(event.encode())
        assert back == event and topic == event.topic()
        EVENT_SCHEMA.validate(json.loads(event.encode()[1]))
    assert [e.topic() for e in one_of_each()] == ["detection.kitchen.yes", "scores.kitchen", "heartbeat", "status"]


def test_the_schema_names_every_field_of_every_record_and_requires_what_they_require():
    schema = EVENT_SCHEMA.schema
    assert set(schema["properties"]["kind"]["enum"]) == set(EVENT_KINDS)
    common = {f.name for f in fields(Event)}
    assert set(schema["properties"]) == common | {"schema", "kind"}
    assert set(schema["required"]) == common | {"schema", "kind"}
    for kind, record in EVENT_KINDS.items():
        rules = [r["then"] for r in schema["allOf"] if kind in json.dumps(r["if"])]
        named = common.union(*(r.get("properties", {}) for r in rules))
        required = set().union(*(r.get("required", []) for r in rules))
        assert {f.name for f in fields(record)} <= named, kind
        assert {f.name for f in fields(record) if f.name not in common} == required, kind


@pytest.mark.parametrize(
    "parts, message",
    [
        ([b"heartbeat"], "1 parts"),
        ([b"heartbeat", b"not json"], "not a UTF-8 topic and a JSON event"),
        ([b"heartbeat", b"[1, 2]"], "JSON list, not an object"),
        ([b"heartbeat", b'{"schema": 2, "kind": "heartbeat"}'], "schema 2 is not 1"),
        ([b"x", b'{"schema": 1, "kind": "gossip"}'], "kind 'gossip' is not one of"),
        ([b"heartbeat", b'{"schema": 1, "kind": "heartbeat", "uptime": 1}'], "missing 6 required"),
        ([b"heartbeat", b'{"schema": 1, "kind": "heartbeat", "frames": true}'], "frames 'True' is not int"),
        ([b"detection", b'{"schema": 1, "kind": "detection", "stream": null}'], "stream 'None' is not str"),
    ],
)
def test_a_message_that_is_not_an_event_is_refused_saying_why(parts, message):
    with pytest.raises(BadEvent, match=message):
        decode(parts)


def test_keys_a_newer_service_adds_are_ignored():
    event = {**HeartbeatEvent(**STATS).to_dict(), "temperature": 41}
    assert decode([b"heartbeat", json.dumps(event).encode()])[1] == HeartbeatEvent(**STATS)


def test_an_ingest_message_reads_back_as_it_was_written():
    rng = np.random.default_rng(0)
    audio = rng.uniform(-1, 1, 321).astype(np.float32)
    frames = rng.normal(size=(7, 3)).astype(np.float32)
    header = IngestHeader("s16le", 16000, seq=4, end=True)
    stream, back, samples = parse_ingest(ingest_message("mic1", header, audio), IngestLimits(max_rate=192000))
    assert (stream, back) == ("mic1", header) and np.abs(samples - audio).max() < 1 / 16000
    header = IngestHeader("f32le", 50, seq=0, channels=3, kind="sensor")
    stream, back, samples = parse_ingest(ingest_message("imu", header, frames), IngestLimits(max_rate=192000))
    assert back == header and np.array_equal(samples, frames)
    with pytest.raises(Reject, match="rate 50 is not within") as rejected:
        parse_ingest(ingest_message("imu", header, frames), IngestLimits(max_rate=10))
    assert rejected.value.counter == "ingest_bad_rate"
