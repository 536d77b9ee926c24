"""Hostile ingest through real sockets to a real `streamrnn serve`: every message that cannot be
used is counted exactly once and dropped, the service stays up with bounded memory, a good remote
stream and a local file stream keep every detection, and idle streams are given back."""

from __future__ import annotations

import json

import numpy as np
import zmq

from conftest import DEMO, assert_demo_words, demo_pcm
from streamrnn.send import messages
from streamrnn.wire import IngestHeader, ingest_message

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
