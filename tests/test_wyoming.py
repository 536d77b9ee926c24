"""The Wyoming wake-word server, driven with the `wyoming` library's own client as Home
Assistant and wyoming-satellite drive it: describe, several clients at once, audio at 16 and
44.1 kHz, a client that leaves mid-stream, one that sends garbage, and silence."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import signal
import socket
import subprocess
import time
from collections import Counter

import numpy as np
import pytest
import soxr
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.info import Describe, Info
from wyoming.wake import Detect, Detection, NotDetected

from conftest import DEMO, STREAMRNN, demo_pcm, export_test_model


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def stream(port: int, audio: np.ndarray, rate: int, names=None, channels: int = 1) -> list:
    """One client: detect, audio-start, the audio in 20-ms chunks, audio-stop; the events it got back."""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Detect(names=names).event())
        await client.write_event(AudioStart(rate=rate, width=2, channels=channels).event())
        pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
        if channels > 1:
            pcm = np.repeat(pcm, channels)
        step = rate // 50 * channels
        for i in range(0, len(pcm), step):
            chunk = AudioChunk(rate=rate, width=2, channels=channels, audio=pcm[i : i + step].tobytes())
            await client.write_event(chunk.event())
        await client.write_event(AudioStop().event())
        got = []
        while True:
            event = await asyncio.wait_for(client.read_event(), timeout=30)
            if event is None:
                return got
            if Detection.is_type(event.type):
                got.append(Detection.from_event(event))
            elif NotDetected.is_type(event.type):
                got.append(NotDetected())
                return got
            if len(got) >= (len(names) if names else 7):
                return got


async def leave_mid_stream(port: int, audio: np.ndarray) -> None:
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
        pcm = (audio[: len(audio) // 3] * 32767).astype("<i2")
        await client.write_event(AudioChunk(rate=16000, width=2, channels=1, audio=pcm.tobytes()).event())


async def garbage(port: int, *messages: bytes) -> bytes:
    """Raw bytes from a hostile client; what the server sent back before it hung up."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for message in messages:
        writer.write(message)
    await writer.drain()
    return await asyncio.wait_for(reader.read(), timeout=10)


def chunk(rate: int, width: int, payload: bytes) -> bytes:
    header = {"type": "audio-chunk", "data": {"rate": rate, "width": width, "channels": 1}}
    return json.dumps(header | {"payload_length": len(payload)}).encode() + b"\n" + payload


async def describe(port: int) -> Info:
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Describe().event())
        return Info.from_event(await asyncio.wait_for(client.read_event(), timeout=10))


async def all_clients(port: int):
    audio = demo_pcm()
    loud = soxr.resample(audio, 16000, 44100).astype(np.float32)
    return await asyncio.gather(
        describe(port),
        stream(port, audio, 16000),
        stream(port, loud, 44100, names=["up", "go"], channels=2),
        stream(port, np.zeros(16000, np.float32), 16000),
        leave_mid_stream(port, audio),
        garbage(port, chunk(16000, 3, b"abc"), chunk(1, 2, b"ab" * 100), b"this is not a wyoming event\n"),
        garbage(port, b'{"type": "audio-chunk", "payload_length": 1000000000}\n', b"\0" * 100000),
        garbage(port, b"{" * 100000 + b"\n"),
    )


def test_wyoming_clients_as_home_assistant_drives_them(service, tmp_path):
    port = free_port()
    s = service("--model", "commands", "--source", f"wyoming:tcp://127.0.0.1:{port}")
    s.collect(lambda e: e.kind == "status")
    info, plain, filtered, silence, _, *hung_up = asyncio.run(all_clients(port))
    s.collect(lambda e: e.kind == "heartbeat" and e.streams == 0, timeout=30)  # every stream ended, also the one left
    code, _, log = s.stop()
    assert code == 0, log
    names = {m.name for m in info.wake[0].models}
    assert {"yes", "no", "up", "go"} <= names and "_silence_" not in names
    assert info.wake[0].version == importlib.metadata.version("streamrnn")
    labels = [d.name for d in plain]
    assert labels[:3] == ["yes", "no", "up"], labels
    assert all(isinstance(d, Detection) and 0 < d.timestamp < 13000 for d in plain)
    assert [d.name for d in filtered] == ["up", "go"]  # 44.1 kHz stereo, only the names it asked for
    assert 3900 < filtered[0].timestamp < 4700  # "up" is at 3.5-4.5 s of the recording
    assert len(silence) == 1 and isinstance(silence[0], NotDetected)
    zeromq = [e.label for e in s.events if e.kind == "detection" and e.stream.startswith("wyoming")]
    assert Counter(labels + [d.name for d in filtered]) <= Counter(zeromq)  # and all of them on the event bus
    assert hung_up == [b"", b"", b""]  # each hostile client disconnected, having got nothing
    problems = s.final_status().problems
    assert problems.get("wyoming_bad_audio") == 2 and problems.get("wyoming_bad_events") == 3, problems
    assert "wyoming_over_limits" not in problems


def test_describe_tells_the_models_served_now_after_a_reload(service, tmp_path):
    port = free_port()
    config = tmp_path / "streamrnn.toml"
    config.write_text(f'sources = ["wyoming:tcp://127.0.0.1:{port}"]\n[[models]]\nmodel = "commands"\n')
    s = service("--config", config)
    s.collect(lambda e: e.kind == "status")
    before = {m.name for m in asyncio.run(describe(port)).wake[0].models}
    config.write_text(f'sources = ["wyoming:tcp://127.0.0.1:{port}"]\n[[models]]\nmodel = "digits"\n')
    s.process.send_signal(signal.SIGHUP)
    s.collect(lambda e: e.kind == "status" and e.state == "reloaded", timeout=10)
    after = asyncio.run(describe(port)).wake[0]
    assert s.stop()[0] == 0
    assert "yes" in before and "seven" not in before
    assert {m.name for m in after.models} == set("zero one two three four five six seven eight nine".split())
    assert all("Free Spoken Digit Dataset" in m.attribution.name for m in after.models)


def test_a_model_installed_by_a_user_reaches_home_assistant_on_reload(service, tmp_path):
    """`streamrnn install-model` puts a new model where the service looks; named in the config, a
    running Wyoming server loads it on SIGHUP and Home Assistant's describe lists its labels, with
    no restart."""
    _, recipe, path = export_test_model(tmp_path)
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}
    done = subprocess.run(STREAMRNN + ["install-model", path], capture_output=True, text=True, timeout=60, env=env)
    installed = tmp_path / "data" / "streamrnn" / "models" / f"{recipe.name}.onnx"
    assert done.returncode == 0 and done.stdout.startswith(f"installed {recipe.name} 0.1.0 as {installed}"), done
    port = free_port()
    config = tmp_path / "streamrnn.toml"
    config.write_text(f'sources = ["wyoming:tcp://127.0.0.1:{port}"]\n[[models]]\nmodel = "commands"\n')
    s = service("--config", config, env=env)
    s.collect(lambda e: e.kind == "status")
    config.write_text(config.read_text() + f'[[models]]\nmodel = "{recipe.name}"\n')
    s.process.send_signal(signal.SIGHUP)
    s.collect(lambda e: e.kind == "status" and e.state == "reloaded", timeout=10)
    names = {m.name for m in asyncio.run(describe(port)).wake[0].models}
    assert s.stop()[0] == 0
    assert {"a", "b", "c", "yes"} <= names


def test_check_names_every_wyoming_address_it_cannot_serve():
    done = subprocess.run(
        STREAMRNN
        + [
            "serve",
            "--check",
            "--model",
            "commands",
            "--source",
            "wyoming:unix:///tmp/x",
            "--source",
            "wyoming:tcp://h",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert "wyoming:unix:///tmp/x is not tcp://HOST:PORT" in done.stderr
    assert "wyoming:tcp://h is not tcp://HOST:PORT" in done.stderr and done.stderr.count("\n") == 2


def test_streamrnn_wyoming_refuses_a_port_in_use():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        done = subprocess.run(
            STREAMRNN + ["wyoming", "--uri", f"tcp://127.0.0.1:{port}", "--model", "commands"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert f"source wyoming:tcp://127.0.0.1:{port}: cannot bind (Address already in use)" in done.stderr
    assert DEMO.exists()


def test_a_zeroconf_name_is_announced_as_home_assistant_looks_for_it(service):
    zeroconf = pytest.importorskip("zeroconf")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("224.0.0.251", 5353))
        except OSError as exc:
            pytest.skip(f"this machine has no route for mDNS: {exc}")
    port = free_port()
    found: list[str] = []

    class Seen(zeroconf.ServiceListener):
        def add_service(self, zc, kind, name):
            found.append(name)

        def update_service(self, zc, kind, name):
            pass

        def remove_service(self, zc, kind, name):
            pass

    s = service("--model", "commands", "--source", f"wyoming:tcp://127.0.0.1:{port}", "--zeroconf", "kitchen-test")
    s.collect(lambda e: e.kind == "status")
    browser = zeroconf.Zeroconf()
    try:
        zeroconf.ServiceBrowser(browser, "_wyoming._tcp.local.", Seen())
        deadline = time.monotonic() + 10
        while "kitchen-test._wyoming._tcp.local." not in found and time.monotonic() < deadline:
            time.sleep(0.1)
        info = browser.get_service_info("_wyoming._tcp.local.", "kitchen-test._wyoming._tcp.local.", timeout=3000)
    finally:
        browser.close()
    code, _, log = s.stop()
    assert code == 0, log
    assert "kitchen-test._wyoming._tcp.local." in found and info is not None and info.port == port
    assert "wyoming_zeroconf_failures" not in s.final_status().problems
