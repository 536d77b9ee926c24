"""Hostile ingest through real sockets to a real `streamrnn serve`: every message that cannot be
used is counted exactly once and dropped, the service stays up with bounded memory, a good remote
stream and a local file stream keep every detection, and idle streams are given back."""

from __future__ import annotations

import json
import os
import socket
import time

import numpy as np
import pytest
import zmq

from conftest import DEMO, assert_demo_words, demo_pcm, free_tcp_address
from streamrnn.client import Subscription
from streamrnn.ingest_format import IngestHeader, ingest_message
from streamrnn.pacing import Pacer
from streamrnn.send import messages

HEADER = {"format": "s16le", "rate": 16000, "channels": 1, "seq": 0}
FLOOD = 300  # new stream ids, one message each, against max_streams = 40
SPEEDING = 30  # one-second messages at once, against burst_seconds = 20
FUZZ = 3000  # messages of random bytes


def header(**fields) -> bytes:
    return json.dumps({**HEADER, **fields}).encode()


def malformed() -> list[list[bytes]]:
    """One message per way of being wrong; each must add exactly one to an ingest_* counter."""
    pcm = b"\0\0" * 160
    return [
        [b"deep", b"[" * 4000 + b"]" * 4000, pcm],  # a header too long to read
        [b"deep", b"[" * 2000 + b"]" * 2000, pcm],  # nested past the JSON reader's recursion limit
        [b"digits", b'{"format": "s16le", "seq": 0, "rate": ' + b"9" * 5000 + b"}", pcm],
        [b"digits", b'{"format": "s16le", "rate": 16000, "seq": ' + b"9" * 4000 + b"}", pcm],
        [b"digits", b'{"format": "s16le", "seq": 0, "rate": ' + b"9" * 4000 + b"}", pcm],
        [b"types", header(format=["s16le"]), pcm],
        [b"types", header(format={"a": 1}), pcm],
        [b"types", header(kind=["audio"]), pcm],
        [b"types", header(channels=True), pcm],
        [b"types", header(seq=-1), pcm],
        [b"types", header(seq=2**70), pcm],
        [b"types", header(rate="16000"), pcm],
        [b"slow", header(rate=1), b"\0\0" * 6000],  # audio at 1 Hz: would upsample 16,000-fold
        [b"slow", header(format="f32le", kind="sensor", rate=0.01), b"\0" * 4],
        [b"huge", header(), b"\0\0" * (25 << 20)],  # 50 MB
        [b"long", header(rate=4000), b"\0\0" * 4000 * 11],  # 11 s in one message
        [b"a.b", header(), pcm],  # a dot would let it into another stream's topic prefix
        [b"tab\there", header(), pcm],
        [b"\x1b[31mred", header(), pcm],
        [b"x" * 201, header(), pcm],
        [b"", header(), pcm],
        [b"\xff\xfe", header(), pcm],
    ]


def fuzz(rng: np.random.Generator) -> list[list[bytes]]:
    """Random multipart messages of random bytes (none of them a usable message)."""
    return [
        [rng.bytes(int(rng.integers(0, 64))) for _ in range(int(rng.choice([1, 2, 3, 3, 3, 4])))] for _ in range(FUZZ)
    ]


def interleave(rng: np.random.Generator, lists: list[list]) -> list:
    """The lists' items shuffled together, each list's own order kept."""
    picks = rng.permutation(np.repeat(np.arange(len(lists)), [len(x) for x in lists]))
    cursors = [iter(x) for x in lists]
    return [next(cursors[k]) for k in picks]


def test_hostile_ingest_is_counted_and_dropped_while_good_streams_keep_every_detection(service, tmp_path):
    ingest = f"ipc://{tmp_path}/ingest"
    config = tmp_path / "hostile.toml"
    config.write_text(
        f'sources = ["pull:{ingest}", "{DEMO}"]\n[[models]]\nmodel = "commands"\n'
        "[ingest]\nmax_streams = 40\nidle_timeout = 2.0\nmax_speed = 1.0\nburst_seconds = 20.0\n"
    )
    s = service("--config", config)
    s.collect(lambda e: e.kind == "status")
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.connect(ingest)
    rng = np.random.default_rng(7)
    silence = np.zeros(320, np.float32)
    bad = malformed() + fuzz(rng)
    flood = [ingest_message(f"flood{i}", IngestHeader("s16le", 16000, seq=0), silence) for i in range(FLOOD)]
    second = np.zeros(16000, np.float32)
    speeding = [
        ingest_message("speeder", IngestHeader("s16le", 16000, seq=i, end=i == SPEEDING - 1), second)
        for i in range(SPEEDING)
    ]
    # the local file source's stream is "demo": a remote sender may neither feed nor end it
    squatter = [parts for parts, _ in messages("demo", np.zeros(3200, np.float32), 16000.0, "audio", 0.02)]
    good = [parts for parts, _ in messages("good", demo_pcm(), 16000.0, "audio", 0.02)]
    for parts in interleave(rng, [good, bad, flood, speeding, squatter]):
        push.send_multipart(parts)
    rss = s.serve.rss_mb()
    s.collect(lambda e: e.kind == "detection" and e.stream == "good" and e.label == "go", timeout=30)
    s.collect(lambda e: e.kind == "detection" and e.stream == "demo" and e.label == "go", timeout=30)
    idle = s.collect(lambda e: e.kind == "heartbeat" and e.streams == 0, timeout=30)  # flood expired, all given back
    code, _, log = s.stop()
    push.close(linger=0)
    assert code == 0, log
    assert_demo_words(s.events, stream="good")
    assert_demo_words(s.events, stream="demo")
    problems = s.final_status().problems
    print("problems after the hostile run", problems, "RSS MB", rss)
    refused = sum(v for k, v in problems.items() if k.startswith("ingest_") and k != "ingest_over_speed")
    assert refused == len(bad) + problems["ingest_too_many_streams"], problems
    assert problems["ingest_too_many_streams"] + problems["streams_expired"] == FLOOD
    assert problems["streams_expired"] <= 40
    assert 0 < problems["ingest_over_speed"] <= SPEEDING - 20  # the end of its last message is kept
    assert problems["streams_owned_elsewhere"] == len(squatter) + 1  # its pieces and its end
    assert not {"queue_overflows", "input_failures", "ingest_failures"} & set(problems)  # each refusal named
    assert idle is not None and rss < 400


def test_a_flood_of_subscriptions_is_bounded_counted_and_given_back(service, tmp_path):
    config = tmp_path / "subs.toml"
    config.write_text(
        f'sources = ["pull:ipc://{tmp_path}/in", "{DEMO}"]\nmax_subscriptions = 100\n[[models]]\nmodel = "commands"\n'
    )
    s = service("--config", config)  # its own subscriber holds 2: "" and "heartbeat"
    s.collect(lambda e: e.kind == "status")
    flood = zmq.Context.instance().socket(zmq.SUB)
    flood.setsockopt(zmq.SNDHWM, 0)  # no limit of its own on what it sends
    for i in range(20000):
        flood.setsockopt(zmq.SUBSCRIBE, f"detection.s{i}.".encode())
    flood.setsockopt(zmq.SUBSCRIBE, b"x" * 300)
    flood.connect(s.address)
    heard = [s.collect(lambda e: e.kind == "heartbeat", timeout=10) for _ in range(12)]
    refused = heard[-1].problems.get("subscriptions_refused", 0)
    flood.close(linger=0)  # its 98 subscriptions are given back
    s.collect(lambda e: e.kind == "detection" and e.stream == "demo" and e.label == "go", timeout=30)
    late = Subscription(s.address, topics=("heartbeat",))
    got = late.receive(timeout=5)
    late.close()
    code, _, log = s.stop()
    assert code == 0, log
    assert refused == 20001 - 98, heard[-1].problems  # the long one and all past the limit
    gaps = [b.uptime - a.uptime for a, b in zip(heard, heard[1:])]
    assert max(gaps) < 1.5, gaps  # heartbeats every 0.5 s through the flood: the loop never stalled
    assert got is not None  # room again for a new subscriber
    assert_demo_words(s.events, stream="demo")


@pytest.mark.slow
def test_a_long_random_fuzz_is_counted_message_by_message(service, tmp_path):
    """200,000 messages of random parts and random headers (each field drawn from good and bad
    values), with a good stream through them; every message the service refuses is counted."""
    ingest = f"ipc://{tmp_path}/ingest"
    s = service("--model", "commands", "--source", f"pull:{ingest}")
    s.collect(lambda e: e.kind == "status")
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.connect(ingest)
    rng = np.random.default_rng(11)
    values = {
        "format": ["s16le", "f32le", "mp3", 7, None, ["s16le"]],
        "rate": [16000, 8000, 1, 0, -5, 1e12, "16000", None, 2**80],
        "channels": [1, 2, 0, 65, True, "1"],
        "seq": [0, 1, -1, 2**70, "0", None],
        "kind": ["audio", "sensor", "video", 3],
    }
    good = [parts for parts, _ in messages("good", demo_pcm(), 16000.0, "audio", 0.02)]
    for i in range(200_000):
        if i % 300 == 0 and good:
            push.send_multipart(good.pop(0))
        if rng.random() < 0.5:
            parts = [rng.bytes(int(rng.integers(0, 40))) for _ in range(int(rng.integers(1, 5)))]
        else:
            fields = {k: v[int(rng.integers(len(v)))] for k, v in values.items() if rng.random() < 0.9}
            parts = [
                f"f{int(rng.integers(100))}".encode(),
                json.dumps(fields).encode(),
                rng.bytes(int(rng.integers(0, 64))),
            ]
        push.send_multipart(parts)
    for parts in good:
        push.send_multipart(parts)
    s.collect(lambda e: e.kind == "detection" and e.stream == "good" and e.label == "go", timeout=120)
    rss = s.serve.rss_mb()
    code, _, log = s.stop()
    push.close(linger=0)
    assert code == 0, log
    assert_demo_words(s.events, stream="good")
    problems = s.final_status().problems
    print("fuzz: problems", problems, "RSS MB", rss)
    assert "ingest_failures" not in problems and "input_failures" not in problems
    assert rss < 400


@pytest.mark.slow
def test_a_soak_of_64_real_time_streams_keeps_every_detection_and_flat_memory(service, tmp_path):
    """64 streams of the demo recording at real time for STREAMRNN_SOAK_SECONDS (default 300)."""
    seconds = float(os.environ.get("STREAMRNN_SOAK_SECONDS", "300"))
    ingest = f"ipc://{tmp_path}/ingest"
    s = service("--model", "commands", "--source", f"pull:{ingest}", topics=("detection", "heartbeat", "status"))
    s.collect(lambda e: e.kind == "status")
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.connect(ingest)
    audio = demo_pcm()
    passes = max(1, int(seconds // (len(audio) / 16000)))
    senders = [messages(f"s{k}", np.tile(audio, passes), 16000.0, "audio", 0.02) for k in range(64)]
    pacer, rss = Pacer(), []
    for step in range(int(passes * len(audio) / 16000 / 0.02)):
        for sender in senders:
            parts, _ = next(sender)
            push.send_multipart(parts)
        s.drain()  # read as a live subscriber does: one that falls behind loses events
        pacer.wait(0.02)
        if step % 500 == 0:
            rss.append(s.serve.rss_mb())
    for sender in senders:
        for parts, _ in sender:
            push.send_multipart(parts)
    s.collect(lambda e: e.kind == "heartbeat" and e.streams == 0, timeout=60)
    code, _, log = s.stop()
    push.close(linger=0)
    assert code == 0, log
    print(f"soak: {seconds:g} s, 64 streams, RSS MB first {rss[0]:.1f} after warm-up {rss[1]:.1f} last {rss[-1]:.1f}")
    for k in range(64):
        found = [e for e in s.events if e.kind == "detection" and e.stream == f"s{k}"]
        assert len(found) >= 6 * passes, (k, len(found))
    assert rss[-1] - rss[1] < 10  # flat after the first seconds
    assert not s.final_status().problems and s.final_status().drops == 0


def test_a_connection_that_never_handshakes_is_closed(service, tmp_path):
    """An idle TCP client holds one of the service's files only `handshake_timeout` seconds
    (ZeroMQ's own default is 30), and recognition goes on beside it."""
    ingest = free_tcp_address()
    config = tmp_path / "idle.toml"
    models = '[[models]]\nmodel = "commands"\n'
    config.write_text(f'sources = ["pull:{ingest}", "{DEMO}"]\nhandshake_timeout = 0.5\n{models}')
    s = service("--config", config)
    s.collect(lambda e: e.kind == "status")
    host, port = ingest.removeprefix("tcp://").rsplit(":", 1)
    idle = socket.create_connection((host, int(port)), timeout=20)
    opened, received = time.monotonic(), b""
    while chunk := idle.recv(4096):  # the service's greeting, then nothing: it waits for ours
        received += chunk
    held = time.monotonic() - opened
    idle.close()
    s.collect(lambda e: e.kind == "detection" and e.stream == "demo" and e.label == "go", timeout=30)
    code, _, log = s.stop()
    assert code == 0, log
    assert received[:1] == b"\xff" and held < 5, (received, held)  # a ZMTP greeting, then closed
    assert_demo_words(s.events, stream="demo")
