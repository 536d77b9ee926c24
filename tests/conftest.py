"""Shared test helpers: real clips, the shared data root, and small models built in code."""

from __future__ import annotations

import json
import os
import sys
from functools import cache
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from streamrnn.audio import read_audio
from streamrnn.runtime import StreamingModel

ROOT = Path(__file__).resolve().parent.parent
CLIPS = ROOT / "tests" / "data"
DATA_ROOT = Path(os.environ.get("STREAMRNN_DATA", ROOT.parent / "shared" / "data"))
STREAMRNN = [sys.executable, "-m", "streamrnn.cli"]

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
):
    """An untrained StreamingRNN whose normalisation is measured on real audio."""
    import torch

    from streamrnn.training.model import StreamingRNN
    from streamrnn.training.recipe import Recipe, finish

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
    recipe.model.encoder = encoder
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
