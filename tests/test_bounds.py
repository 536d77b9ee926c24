"""Bounded in seconds and bytes, through real sockets to a real `streamrnn serve`: a sender gets
no fresh speed credit with each stream it starts, a Wyoming client none with each audio-start, and
no tick of the loop runs long whatever waits (a long file at full speed); a good client's
detections stay exactly those of offline `detect`, and memory stays bounded."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import zmq
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.wake import Detection, NotDetected

from conftest import DEMO, ROOT, STREAMRNN, demo_pcm
from streamrnn.ingest_format import IngestHeader, ingest_message

FRAME = 0.08  # seconds per frame of the commands model


def offline(stream: str) -> list[tuple[str, float, float]]:
    """What `streamrnn detect` finds in the demo: the exact detections a served stream must give."""
    done = subprocess.run(STREAMRNN + ["detect", "--model", "commands", DEMO], capture_output=True, text=True, cwd=ROOT)
    return [(e["label"], e["start"], e["end"]) for e in map(json.loads, done.stdout.splitlines())]


def found(events, stream: str) -> list[tuple[str, float, float]]:
    return [(e.label, e.start, e.end) for e in events if e.kind == "detection" and e.stream == stream]


def test_a_sender_gets_no_fresh_credit_with_each_stream(service, tmp_path):
    """One sender starting 150 streams of 2 s each at once (and restarting one with seq 0) gets
    only its sender credit through; the rest is counted as over speed. A good sender (another
    process) keeps every detection, exactly."""
    ingest = f"ipc://{tmp_path}/ingest"
    config = tmp_path / "c.toml"
    config.write_text(
        f'sources = ["pull:{ingest}"]\n[[models]]\nmodel = "commands"\n[ingest]\nsender_speed = 5\nsender_burst = 20\n'
    )
    s = service("--config", config)
    s.collect(lambda e: e.kind == "status")
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.connect(ingest)
    noise = (np.random.default_rng(0).standard_normal(32000) * 0.01).astype(np.float32)
    started = time.monotonic()
    for k in range(150):
        push.send_multipart(ingest_message(f"flood{k % 100}", IngestHeader("s16le", 16000.0, 0), noise))
    flood_seconds = time.monotonic() - started
    good = subprocess.run(
        STREAMRNN + ["send", DEMO, "--connect", ingest, "--stream", "good", "--fast"], capture_output=True, timeout=60
    )
    assert good.returncode == 0, good.stderr
    s.collect(lambda e: e.kind == "detection" and e.stream == "good" and e.label == "go", timeout=30)
    rss = s.serve.rss_mb()
    code, _, log = s.stop()
    push.close(linger=0)
    assert code == 0, log
    status = s.final_status()
    good_frames = -(-len(demo_pcm()) // 1280)
    accepted = (status.frames - good_frames) * FRAME  # seconds of flood signal scored
    assert accepted <= 20 + 5 * flood_seconds + 2, (accepted, flood_seconds)
    assert status.problems["ingest_over_speed"] >= 150 - (20 + 5 * flood_seconds + 2) / 2
    assert found(s.events, "good") == offline("good"), status.problems
    assert rss < 400, rss  # well under the units' 768 MB MemoryHigh


async def _wyoming(port: int, audio: np.ndarray, starts: int = 1) -> list:
    """A client: audio-start, the audio in 1-s chunks, `starts` times over, then audio-stop; the
    detections it got back."""
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    async with AsyncTcpClient("127.0.0.1", port) as client:
        for _ in range(starts):
            await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
            for i in range(0, len(pcm), 32000):
                await client.write_event(AudioChunk(rate=16000, width=2, channels=1, audio=pcm[i : i + 32000]).event())
        await client.write_event(AudioStop().event())
        got = []
        while True:
            event = await asyncio.wait_for(client.read_event(), timeout=30)
            if event is None or NotDetected.is_type(event.type):
                return got
            if Detection.is_type(event.type):
                got.append(Detection.from_event(event).name)
                if len(got) == 7:
                    return got


def test_a_wyoming_client_gets_no_fresh_credit_with_each_audio_start(service, tmp_path):
    """A client that sends an audio-start before every 12 s of audio, 20 times as fast as it can,
    gets its connection's credit through (20 s ahead, 20x real time), not 240 s; a good client
    beside it gets every word."""
    with __import__("socket").socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "c.toml"
    config.write_text(
        f'sources = ["wyoming:tcp://127.0.0.1:{port}"]\n[[models]]\nmodel = "commands"\n[ingest]\nburst_seconds = 20\n'
    )
    s = service("--config", config)
    s.collect(lambda e: e.kind == "status")
    noise = (np.random.default_rng(0).standard_normal(12 * 16000) * 0.01).astype(np.float32)

    async def both():
        started = time.monotonic()
        flood = asyncio.create_task(_wyoming(port, noise, starts=20))
        words = await _wyoming(port, demo_pcm())
        await flood
        return words, time.monotonic() - started

    words, seconds = asyncio.run(both())
    s.collect(lambda e: e.kind == "heartbeat" and e.streams == 0, timeout=60)
    rss = s.serve.rss_mb()
    code, _, log = s.stop()
    assert code == 0, log
    assert words == [label for label, _, _ in offline("wyoming")]
    status = s.final_status()
    accepted = status.frames * FRAME - len(demo_pcm()) / 16000
    assert accepted <= 20 + 20 * seconds + 2, (accepted, seconds)
    assert status.problems["wyoming_over_limits"] > 0
    assert rss < 400, rss


def test_no_tick_runs_long_on_a_long_file_at_full_speed(service, tmp_path):
    """An hour of audio served with --fast: heartbeats keep coming (each tick scores at most a
    minute of signal), SIGTERM ends it within a second or two, memory stays bounded."""
    long = tmp_path / "hour.flac"
    sf.write(long, np.tile(demo_pcm(), 282), 16000)  # 60 min
    s = service("--model", "commands", "--source", long, "--fast", topics=("heartbeat", "status"))
    s.collect(lambda e: e.kind == "status")
    beats = []
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        event = s.subscription.receive(timeout=0.5)
        if event is not None and event.kind == "heartbeat":
            beats.append(time.monotonic())
    rss = s.serve.rss_mb()
    stopped = time.monotonic()
    s.process.send_signal(signal.SIGTERM)
    code = s.process.wait(timeout=30)
    took = time.monotonic() - stopped
    gaps = np.diff(beats)
    assert code == 0 and took < 2.0, took
    assert len(beats) >= 5 and gaps.max() < 1.5, gaps
    assert rss < 400, rss


def test_no_wyoming_slot_is_held_forever(service, tmp_path):
    """Connections that send nothing, or a header a byte at a time, hold every slot
    (`max_streams` 4) only until their timeouts; then a good client gets in and gets every word."""
    with __import__("socket").socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "c.toml"
    config.write_text(
        f'sources = ["wyoming:tcp://127.0.0.1:{port}"]\n[[models]]\nmodel = "commands"\n'
        "[ingest]\nmax_streams = 4\n[wyoming]\nfirst_event_timeout = 0.5\nread_timeout = 1.0\nidle_timeout = 1.0\n"
    )
    s = service("--config", config)
    s.collect(lambda e: e.kind == "status")
    socket = __import__("socket")
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    slow = socket.create_connection(("127.0.0.1", port))
    for byte in b'{"type": "describe"':  # a byte every 0.1 s: never a whole event within 1 s
        slow.sendall(bytes([byte]))
        time.sleep(0.1)
        if byte == ord(":"):
            break
    words = asyncio.run(_wyoming(port, demo_pcm()))
    time.sleep(1.0)  # the slow one's event past its read_timeout
    for c in [*idle, slow]:
        c.close()
    code, _, log = s.stop()
    assert code == 0, log
    assert words == [label for label, _, _ in offline("wyoming")]
    problems = s.final_status().problems
    assert problems["wyoming_idle_closed"] == 3 and problems["wyoming_slow_closed"] == 1, problems


def test_an_empty_wyoming_stream_is_answered(service, tmp_path):
    """audio-start then audio-stop with no audio between: the client gets not-detected (it waited
    for ever before), a hundred times over, and nothing is kept of them."""
    with __import__("socket").socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    s = service("--model", "commands", "--source", f"wyoming:tcp://127.0.0.1:{port}")
    s.collect(lambda e: e.kind == "status")

    async def empties() -> list[bool]:
        answers = []
        async with AsyncTcpClient("127.0.0.1", port) as client:
            for _ in range(100):
                await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
                await client.write_event(AudioStop().event())
                event = await asyncio.wait_for(client.read_event(), timeout=5)
                answers.append(event is not None and NotDetected.is_type(event.type))
        return answers

    assert all(asyncio.run(empties()))
    assert s.stop()[0] == 0


def test_files_get_the_audio_rate_floor_and_their_bad_samples_are_counted(service, tmp_path):
    """A file whose header says 1 Hz is refused in one line by serve --check and detect (it cost
    1.6 GB and two minutes); NaN and infinity in a float file are counted and heard as silence, and
    the words around them are still found."""
    slow = tmp_path / "slow.wav"
    sf.write(slow, np.zeros(16, np.float32), 1, subtype="FLOAT")
    check = subprocess.run(
        STREAMRNN + ["serve", "--model", "commands", "--source", slow, "--check"], capture_output=True, text=True
    )
    detect = subprocess.run(STREAMRNN + ["detect", "--model", "commands", slow], capture_output=True, text=True)
    for done in (check, detect):
        assert done.returncode == 1 and "1 Hz is below 4000 Hz, too slow to be audio" in done.stderr, done.stderr
    broken = demo_pcm().copy()
    broken[[100, 200, 300]] = [np.nan, np.inf, -np.inf]  # in the silence before "yes"
    bad = tmp_path / "bad.wav"
    sf.write(bad, broken, 16000, subtype="FLOAT")
    s = service("--model", "commands", "--source", bad, "--fast")
    code, log = s.finish()
    assert code == 0, log
    assert s.final_status().problems["file_not_finite"] == 1
    assert found(s.events, "bad") == offline("bad")


def test_ipv6_loopback_serves_and_metrics_for_other_machines_need_insecure(service, tmp_path):
    """tcp://[::1] binds (ingest) and connects (send), where ZeroMQ sockets refused it before; a
    metrics address other machines reach is refused without [security] insecure, as any bound
    address is; a Wyoming client that resets its connection is not a bad event."""
    with __import__("socket").socket(__import__("socket").AF_INET6) as probe:
        probe.bind(("::1", 0))
        port = probe.getsockname()[1]
    s = service("--model", "commands", "--source", f"pull:tcp://[::1]:{port}")
    s.collect(lambda e: e.kind == "status")
    sent = subprocess.run(STREAMRNN + ["send", DEMO, "--connect", f"tcp://[::1]:{port}", "--fast"], capture_output=True)
    assert sent.returncode == 0, sent.stderr
    s.collect(lambda e: e.kind == "detection" and e.label == "go", timeout=30)
    assert s.stop()[0] == 0
    assert found(s.events, "demo") == offline("demo")
    check = STREAMRNN + ["serve", "--model", "commands", "--source", DEMO, "--check", "--metrics"]
    wide = subprocess.run(check + ["0.0.0.0:9464"], capture_output=True, text=True)
    assert wide.returncode == 1 and "metrics 0.0.0.0:9464 is reachable from other machines" in wide.stderr
    assert subprocess.run(check + ["127.0.0.1:9464"], capture_output=True).returncode == 0


def test_a_wyoming_client_that_resets_is_no_bad_event(service, tmp_path):
    with __import__("socket").socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    s = service("--model", "commands", "--source", f"wyoming:tcp://127.0.0.1:{port}")
    s.collect(lambda e: e.kind == "status")
    socket = __import__("socket")
    for _ in range(5):  # half an event, then a reset (SO_LINGER 0: RST instead of FIN)
        c = socket.create_connection(("127.0.0.1", port))
        c.sendall(
            b'{"type": "audio-chunk", "data": {"rate": 16000, "width": 2, "channels": 1}, "payload_length": 64000}\n'
        )
        c.sendall(b"\0" * 1000)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, __import__("struct").pack("ii", 1, 0))
        c.close()
    time.sleep(0.5)
    assert s.stop()[0] == 0
    assert "wyoming_bad_events" not in s.final_status().problems, s.final_status().problems


def test_no_tick_runs_long_when_64_streams_burst_at_once(service, tmp_path):
    """64 streams each sending a minute of audio at once (sender limits raised so that one
    process may): heartbeats keep coming, what is past the input bound is refused and counted,
    SIGTERM ends it within a second or two, memory stays bounded."""
    ingest = f"ipc://{tmp_path}/ingest"
    config = tmp_path / "c.toml"
    config.write_text(
        f'sources = ["pull:{ingest}"]\n[[models]]\nmodel = "commands"\n'
        "[ingest]\nsender_speed = 100000\nsender_burst = 100000\n"
    )
    s = service("--config", config, topics=("heartbeat", "status"))
    s.collect(lambda e: e.kind == "status")
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 0)
    push.connect(ingest)
    noise = (np.random.default_rng(0).standard_normal(32000) * 0.01).astype(np.float32)
    for seq in range(30):
        for k in range(64):
            push.send_multipart(ingest_message(f"s{k}", IngestHeader("s16le", 16000.0, seq), noise))
    beats = []
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        event = s.subscription.receive(timeout=0.5)
        if event is not None and event.kind == "heartbeat":
            beats.append(time.monotonic())
    rss = s.serve.rss_mb()
    stopped = time.monotonic()
    s.process.send_signal(signal.SIGTERM)
    code = s.process.wait(timeout=30)
    took = time.monotonic() - stopped
    push.close(linger=0)
    assert code == 0 and took < 2.0, took
    assert len(beats) >= 5 and np.diff(beats).max() < 1.5, np.diff(beats)
    assert rss < 400, rss


@pytest.mark.parametrize("entry", ["console script", "python -m streamrnn"])
def test_a_service_takes_its_signals_before_anything_heavy_loads(tmp_path, entry):
    """A SIGTERM or SIGHUP early in start-up is kept, not fatal: both entries install the service's
    handlers before pyzmq, numpy or onnxruntime load (seen in the import order `-X importtime`
    prints, which a timed signal could only sample)."""
    command = [str(Path(sys.executable).parent / "streamrnn")] if entry == "console script" else ["-m", "streamrnn"]
    args = ["serve", "--fast", "--model", "computer", "--source", str(ROOT / "streamrnn/samples/wake.flac")]
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *command, *args, "--publish", f"ipc://{tmp_path}/events"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = [line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    installed = loaded.index("streamrnn.service.signals")
    assert all(loaded.index(heavy) > installed for heavy in ("zmq", "numpy", "onnxruntime"))
