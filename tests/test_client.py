"""Subscribers: `streamrnn listen`, the reconnecting Python client, and sensor frames end to end."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import numpy as np
import pytest
import zmq

from conftest import DEMO, EVENT_SCHEMA, ROOT, STREAMRNN, Service, export_test_model, free_tcp_address
from streamrnn.client import Subscription
from streamrnn.wire import HeartbeatEvent


def serve(address: str, tmp_path, name: str) -> subprocess.Popen:
    return subprocess.Popen(
        STREAMRNN
        + [
            "serve",
            "--model",
            "commands",
            "--source",
            f"pull:ipc://{tmp_path}/{name}",
            "--publish",
            address,
            "--heartbeat",
            "0.2",
        ],
        cwd=ROOT,
        stderr=subprocess.DEVNULL,
    )


def test_listen_prints_events_as_json_lines(tmp_path):
    address = free_tcp_address()
    service = serve(address, tmp_path, "in")
    try:
        done = subprocess.run(
            STREAMRNN + ["listen", "--connect", address, "--topic", "heartbeat", "--count", "3"],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=ROOT,
        )
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(timeout=10)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    for event in events:
        EVENT_SCHEMA.validate(event)  # the wire's own JSON, as a program in any language reads it
    assert [e["kind"] for e in events] == ["heartbeat"] * 3
    assert events[0]["seq"] < events[1]["seq"] < events[2]["seq"]


def test_subscription_survives_a_service_restart(tmp_path):
    address = free_tcp_address()
    subscription = Subscription(address, ("heartbeat",), silence=1.0)
    first = serve(address, tmp_path, "a")
    try:
        before = subscription.receive(timeout=20)
        assert before is not None and before.kind == "heartbeat"
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=10) == 0
        second = serve(address, tmp_path, "b")
        try:
            after = None
            while after is None or after.uptime >= before.uptime + 5:
                after = subscription.receive(timeout=20)
                assert after is not None, "no event from the restarted service"
            assert after.seq < 5  # a new publisher counts from 0 again
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=10)
    finally:
        first.kill()
        subscription.close()


def test_sensor_frames_through_ingest_reach_a_sensor_model(tmp_path):
    _, _, model = export_test_model(tmp_path, "gru", "sensor", chunk=10)
    csv = tmp_path / "wrist.csv"
    rng = np.random.default_rng(1)
    np.savetxt(csv, rng.normal(size=(200, 3)), delimiter=",", header="x,y,z", comments="")  # with a header row
    ingest = f"ipc://{tmp_path}/ingest"
    s = Service(
        tmp_path, "--model", model, "--model", "commands", "--source", f"pull:{ingest}", "--scores-rate", "1000"
    )
    try:
        s.collect(lambda e: e.kind == "status")
        sent = subprocess.run(
            STREAMRNN + ["send", csv, "--rate", "25", "--connect", ingest, "--fast"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        assert sent.returncode == 0, sent.stderr
        s.collect(lambda e: e.kind == "scores" and e.stream == "wrist", timeout=20)
        s.collect(lambda e: e.kind == "heartbeat" and e.frames == 200 and e.streams == 0, timeout=20)
        code, _, log = s.stop()
    finally:
        s.close()
    assert code == 0, log
    scores = [e for e in s.events if e.kind == "scores" and e.stream == "wrist"]
    assert {e.model for e in scores} == {"test_gru_sensor"}  # the audio model never sees it
    assert set(scores[0].scores) == {"a", "b", "c", "nothing"}
    assert "streams_unserved" not in s.final_status().problems


def test_the_readme_file_and_listen_example_works_as_written(tmp_path):
    """`serve --source FILE --fast --wait-subscriber 30` in one shell, `listen` started later in another."""
    address = free_tcp_address()
    serving = subprocess.Popen(
        STREAMRNN
        + ["serve", "--model", "commands", "--source", DEMO, "--fast", "--wait-subscriber", "30", "--publish", address],
        cwd=ROOT,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)  # the second shell comes a moment later
        done = subprocess.run(
            STREAMRNN + ["listen", "--connect", address, "--topic", "detection", "--count", "6"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert serving.wait(timeout=30) == 0
    finally:
        serving.kill()
    assert done.returncode == 0, done.stderr
    labels = [json.loads(line)["label"] for line in done.stdout.splitlines()]
    assert labels[:3] == ["yes", "no", "up"], labels


@pytest.mark.parametrize("command", ["send", "listen"])
def test_an_address_without_a_scheme_is_a_one_line_error(command):
    args = ["send", str(DEMO)] if command == "send" else ["listen", "--count", "1"]
    done = subprocess.run(
        STREAMRNN + [*args, "--connect", "localhost:5556"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 1
    assert done.stderr == (
        "streamrnn: error: --connect localhost:5556 is not a ZeroMQ address (tcp://HOST:PORT or ipc://PATH)\n"
    )


def test_send_fails_when_nothing_listens():
    started = time.monotonic()
    done = subprocess.run(
        STREAMRNN + ["send", str(DEMO), "--connect", free_tcp_address(), "--fast", "--timeout", "1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1 and time.monotonic() - started < 15
    assert "nothing took the messages within 1 s" in done.stderr, done.stderr


def test_a_subscriber_of_every_topic_counts_the_events_it_lost(tmp_path):
    """A publisher of the wire format (as a service whose queue for this subscriber overflowed)
    skips seq 3 and 4, then starts again from 0 (a restart, not a loss)."""
    address = f"ipc://{tmp_path}/events"
    publisher = zmq.Context.instance().socket(zmq.PUB)
    publisher.bind(address)
    subscription = Subscription(address)
    time.sleep(0.3)
    stats = dict(uptime=1.0, streams=0, frames=0, events=0, drops=0, subscribers=1, problems={})
    for seq in (0, 1, 2, 5, 6, 0, 1):
        publisher.send_multipart(HeartbeatEvent(**stats, seq=seq, time="2026-12-02T00:00:00.000+00:00").encode())
    got = [subscription.receive(timeout=5) for _ in range(7)]
    subscription.close()
    publisher.close(linger=0)
    assert [e.seq for e in got] == [0, 1, 2, 5, 6, 0, 1] and subscription.missed == 2
