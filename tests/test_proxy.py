"""Several services behind one event address: `streamrnn proxy` (ZeroMQ's XSUB/XPUB proxy)
and one subscriber that hears every instance, each with its own unbroken `seq`."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
import zmq

from conftest import DEMO, STREAMRNN, assert_demo_words
from streamrnn.client import Subscription


def test_one_subscriber_hears_three_instances_through_the_proxy(tmp_path):
    front = f"ipc://{tmp_path}/all"
    backs = [f"ipc://{tmp_path}/room{k}" for k in range(3)]
    proxy = subprocess.Popen(
        STREAMRNN + ["proxy", "--publish", front, *[a for b in backs for a in ("--connect", b)]],
        stderr=subprocess.PIPE,
        text=True,
    )
    subscription = Subscription(front)
    instances = [
        subprocess.Popen(
            STREAMRNN
            + ["serve", "--model", "commands", "--source", DEMO, "--fast", "--publish", back]
            + ["--instance", f"room{k}", "--wait-subscriber", "30", "--heartbeat", "0.5"],
            stderr=subprocess.DEVNULL,
        )
        for k, back in enumerate(backs)
    ]
    events, stopped, deadline = [], set(), time.monotonic() + 60
    try:
        while len(stopped) < 3 and time.monotonic() < deadline:
            event = subscription.receive(timeout=1.0)
            if event is None:
                continue
            events.append(event)
            if event.kind == "status" and event.state == "stopping":
                stopped.add(event.instance)
        codes = [p.wait(timeout=30) for p in instances]
    finally:
        for p in instances:
            p.kill()
        proxy.send_signal(signal.SIGINT)
        proxy_code = proxy.wait(timeout=10)
        subscription.close()
    assert stopped == {"room0", "room1", "room2"} and codes == [0, 0, 0], (stopped, codes)
    for k in range(3):
        mine = [e for e in events if e.instance == f"room{k}"]
        assert_demo_words(mine, stream="demo")
        seqs = [e.seq for e in mine]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs  # every event of it, in order
    assert subscription.missed == 0
    said = proxy.stderr.read() if proxy.stderr else ""
    assert proxy_code == 130, said
    assert said.startswith(f"streamrnn proxy: relaying the events of {', '.join(backs)} on {front}\n"), said


def flood(service: zmq.Socket, seconds: float) -> None:
    """Publish 200-byte events as fast as the socket takes them, for `seconds`."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        service.send(b"x" * 200)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_the_proxy_stops_on_a_signal_that_arrives_while_it_relays(tmp_path, sig, code):
    context = zmq.Context.instance()
    service = context.socket(zmq.PUB)
    service.bind(f"ipc://{tmp_path}/service")
    codes = []
    for attempt in range(3):  # before the fix, 8 proxies in 12 hung this way
        front = f"ipc://{tmp_path}/front{attempt}"
        proxy = subprocess.Popen(STREAMRNN + ["proxy", "--publish", front, "--connect", f"ipc://{tmp_path}/service"])
        subscriber = context.socket(zmq.SUB)
        subscriber.setsockopt(zmq.SUBSCRIBE, b"")
        subscriber.connect(front)
        ready_by = time.monotonic() + 30
        while not subscriber.poll(0):  # until events flow through the proxy
            assert proxy.poll() is None and time.monotonic() < ready_by, "the proxy never relayed"
            service.send(b"event")
            time.sleep(0.01)
        flood(service, 0.15)
        proxy.send_signal(sig)  # mid-flood
        flood(service, 0.15)
        try:
            codes.append(proxy.wait(timeout=10))
        except subprocess.TimeoutExpired:
            proxy.kill()
            codes.append(proxy.wait())
        subscriber.close(linger=0)
    service.close(linger=0)
    assert codes == [code] * 3
