"""Shared test helpers: real clips, the shared data root, and small models built in code."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from functools import cache
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import soundfile as sf
import zmq

from streamrnn.audio import read_audio
from streamrnn.client import Subscription
from streamrnn.dev.harness import ServeProcess
from streamrnn.runtime import StreamingModel

ROOT = Path(__file__).resolve().parent.parent
CLIPS = ROOT / "tests" / "data"
DATA_ROOT = Path(os.environ.get("STREAMRNN_DATA", ROOT.parent / "shared" / "data"))
os.environ["STREAMRNN_DATA"] = str(DATA_ROOT)  # the lab's data root, for recipes and every command the tests run
STREAMRNN = [sys.executable, "-m", "streamrnn"]

DEMO = ROOT / "streamrnn" / "samples" / "demo.flac"
DEMO_WORDS = [
    ("yes", 0.5, 1.5),
    ("no", 2.0, 3.0),
    ("up", 3.5, 4.5),
    ("down", 5.0, 6.0),
    ("left", 6.5, 7.5),
    ("stop", 8.0, 9.0),
    ("go", 9.5, 10.5),  # commands
    ("three", 11.0, 11.33),
    ("seven", 11.83, 12.29),
]  # digits
EVENT_SCHEMA = jsonschema.Draft202012Validator(json.loads((ROOT / "streamrnn" / "event.schema.json").read_text()))


@cache
def demo_frames() -> int:
    """At least this many `commands` frames are scored from one pass of the 12.8-s demo recording."""
    return round(11.0 / StreamingModel(ROOT / "streamrnn" / "models" / "commands.onnx").info.frame_seconds)


def assert_demo_words(events: list[dict], stream: str | None = None, offset: float = 0.0) -> None:
    """Most words of the demo recording detected in their time window, almost nothing else."""
    found = [e for e in events if e.kind == "detection" and (stream is None or e.stream == stream)]

    def fits(e, word, start, end):
        return e.label == word and start + offset - 0.2 <= e.end <= end + offset + 0.6

    hits = [w for w, s, t in DEMO_WORDS if any(fits(e, w, s, t) for e in found)]
    wrong = [e for e in found if not any(fits(e, w, s, t) for w, s, t in DEMO_WORDS)]
    assert len(hits) >= 6, (hits, found)
    assert len(wrong) <= 1, wrong


needs_data = pytest.mark.skipif(
    not (DATA_ROOT / "speech_commands").is_dir(), reason=f"shared data not found at {DATA_ROOT} (set STREAMRNN_DATA)"
)


def clip(name: str, rate: int = 16000) -> np.ndarray:
    """A committed real clip, as mono float32 at `rate`."""
    return read_audio(next(CLIPS.glob(f"{name}_*.flac")), rate)


@pytest.fixture(scope="session")
def speech() -> np.ndarray:
    """About 4 s of real speech and noise: yes, no, up and a background-noise cut."""
    return np.concatenate([clip("yes"), clip("no"), clip("up"), clip("silence")])


def build_model(
    cell: str = "gru",
    kind: str = "audio",
    chunk: int = 8,
    hidden: int = 24,
    layers: int = 2,
    seed: int = 0,
    context_frames: int = 0,
    encoder: str = "",
    encoder_file: str = "",
):
    """An untrained StreamingRNN whose normalisation is measured on real audio."""
    import torch

    from streamrnn.recipe.schema import Recipe, finish
    from streamrnn.training.model import StreamingRNN

    recipe = Recipe(name=f"test_{cell}_{kind}")
    recipe.data.path = "unused"
    recipe.data.kind = kind
    recipe.data.layout = "folders" if kind == "audio" else "csv"
    recipe.data.labels = ["a", "b", "c", "nothing"]
    recipe.data.background_label = "nothing"
    recipe.data.channels = 1 if kind == "audio" else 3
    recipe.data.sample_rate = 16000 if kind == "audio" else 25
    recipe.model.cell, recipe.model.chunk = cell, chunk
    recipe.model.hidden, recipe.model.layers = hidden, layers
    recipe.model.context_frames = context_frames
    recipe.model.encoder, recipe.model.encoder_file = encoder, encoder_file
    finish(recipe)
    torch.manual_seed(seed)
    model = StreamingRNN(recipe).eval()
    if kind == "audio":
        with torch.no_grad():
            feats, _ = model.features(torch.from_numpy(clip("yes"))[None], model.zero_state(1))
            model.norm.set_statistics(feats[0].mean(0), feats[0].std(0))
    return model, recipe


def export_test_model(tmp_path: Path, cell: str = "gru", kind: str = "audio", **kwargs):
    from streamrnn.deploy.export import export_model

    model, recipe = build_model(cell, kind, **kwargs)
    path = export_model(
        model,
        recipe,
        recipe.data.labels,
        tmp_path / f"{recipe.name}.onnx",
        {"a": 0.5, "b": 0.5, "c": 0.5},
        "test: untrained",
    )
    return model, recipe, path


def demo_pcm() -> np.ndarray:
    samples, _ = sf.read(DEMO, dtype="float32")
    return samples


class Service:
    """A `streamrnn serve` subprocess (the project's one harness) publishing on ipc:// with a
    subscriber already listening."""

    def __init__(self, tmp_path, *args, env=None, stdin=None, topics=("",), keys=None, python=None):
        self.address = f"ipc://{tmp_path}/events"
        self.subscription = Subscription(self.address, topics, keys=keys)
        args = ["--publish", self.address, "--wait-subscriber", "10", "--heartbeat", "0.5", *map(str, args)]
        self.serve = ServeProcess(tmp_path, args, env=env, stdin=stdin, cwd=ROOT, python=python)
        self.process = self.serve.process
        self.events: list[dict] = []

    def collect(self, until=lambda event: False, timeout: float = 60) -> dict | None:
        """Gather events until one satisfies `until` (returned), the process ends, or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            event = self.subscription.receive(timeout=0.2)
            if event is None:
                if self.process.poll() is not None:
                    return None
                continue
            EVENT_SCHEMA.validate(event.to_dict())
            self.events.append(event)
            if until(event):
                return event
        raise AssertionError(f"timed out; events so far: {self.events[-5:]}")

    def drain(self) -> None:
        """Take the events already waiting, without waiting for more."""
        while (event := self.subscription.receive(timeout=0.001)) is not None:
            EVENT_SCHEMA.validate(event.to_dict())
            self.events.append(event)

    def stop(self, sig=signal.SIGTERM) -> tuple[int, float, str]:
        code, took = self.serve.stop(sig)
        self.collect(timeout=1)
        return code, took, self.serve.log_text()

    def finish(self) -> tuple[int, str]:
        self.collect(lambda e: getattr(e, "state", None) == "stopping")
        code = self.process.wait(timeout=20)
        return code, self.serve.log_text()

    def close(self):
        self.serve.close()
        self.subscription.close()

    def final_status(self) -> dict:
        return [e for e in self.events if e.kind == "status"][-1]


@pytest.fixture
def service(tmp_path):
    started = []

    def start(*args, **kwargs):
        started.append(Service(tmp_path, *args, **kwargs))
        return started[-1]

    yield start
    for s in started:
        s.close()


def ingest_service(service, tmp_path, *args, topics=("",)):
    """A running service with a ZeroMQ ingest source, and a PUSH socket connected to it."""
    ingest = f"ipc://{tmp_path}/ingest"
    s = service("--model", "commands", "--source", f"pull:{ingest}", *args, topics=topics)
    s.collect(lambda e: e.kind == "status")
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.connect(ingest)
    return s, push


def free_tcp_address() -> str:
    """A loopback TCP address with a port nobody holds right now."""
    probe = zmq.Context.instance().socket(zmq.PUB)
    port = probe.bind_to_random_port("tcp://127.0.0.1")
    probe.close(linger=0)
    return f"tcp://127.0.0.1:{port}"


@pytest.fixture
def alsa_home(tmp_path):
    """A HOME whose .asoundrc offers `recorded`, an input reading the demo as 16 kHz s16 PCM."""
    raw = tmp_path / "demo.raw"
    samples, _ = sf.read(DEMO, dtype="int16")
    samples.astype("<i2").tofile(raw)
    (tmp_path / ".asoundrc").write_text(f"""
pcm.recorded {{
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "{raw}"
    format "raw"
}}
""")
    return dict(os.environ, HOME=str(tmp_path))
