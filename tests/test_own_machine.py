"""A user's own machine: no lab data folder, an empty home, negatives fetched from .deb files."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from conftest import CLIPS, DEMO, STREAMRNN
from streamrnn.evaluation.negatives import REMOVE
from streamrnn.recipe.datasets import NEGATIVE_SETS, TEXT_ONLY

pytestmark = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in ("dpkg-deb", "espeak-ng", "flite")),
    reason="needs dpkg-deb, espeak-ng and flite (tests/run.sh installs them as root)",
)
WORDS = sorted(CLIPS.glob("*_nohash_0.flac"))  # real Speech Commands words, none of them "hey nova"


def package(folder, name: str) -> None:
    """A .deb named as a negatives package, holding real spoken words (and, where fetch-negatives
    removes files by name, files of those names); `fortunes` holds English text."""
    root = folder / name
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: test <t@example.org>\nDescription: test\n"
    )
    files = root / "usr" / "share" / ("games/fortunes" if name in TEXT_ONLY else name)
    files.mkdir(parents=True)
    if name in TEXT_ONLY:
        (files / "quotes").write_text("The river was wide and slow that summer.\n%\nShe left the lamp on for him.\n")
    else:
        words = np.concatenate([sf.read(w, dtype="float32")[0] for w in WORDS] * 3)
        sf.write(files / "talk.flac", words, 16000)
        for pattern in REMOVE.get(name, ()):
            sf.write(files / pattern.replace("*", "line"), words[:16000], 16000, format="OGG")
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(root), str(folder / f"{name}_1.0_all.deb")],
        check=True,
        capture_output=True,
    )


def test_a_wake_word_trains_without_the_lab_data(tmp_path):
    """With no data root (no Speech Commands, no noise folder) and an empty home: fetch-negatives
    unpacks the train and validation sets from local .deb files into the user's cache, training
    stops until build-conversation has made English dialogue without the phrase (Whisper
    tiny.en scans it), the wake-word template says in one line what it goes on without, trains (a small run: a few dozen
    synthetic clips, one epoch), exports a model, installs it, and `detect` finds it by name."""
    debs = tmp_path / "debs"
    for name in [*NEGATIVE_SETS["train"], *NEGATIVE_SETS["validation"]]:
        package(debs, name)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("STREAMRNN_DATA", "XDG_CACHE_HOME", "XDG_DATA_HOME")}
    env["HOME"] = str(home)

    def run(*args, timeout=600):
        done = subprocess.run(
            STREAMRNN + list(args), capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    for which in ("train", "validation"):
        run("fetch-negatives", "--set", which, "--from", str(debs))
    cache = home / ".cache" / "streamrnn" / "negatives"
    assert {p.name for p in cache.iterdir()} == {*NEGATIVE_SETS["train"], *NEGATIVE_SETS["validation"]}
    assert not list(cache.rglob("*_desc.ogg")) and not list((cache / "fillets-ng-data-nl").rglob("disk-v-viry.ogg"))

    recipe = tmp_path / "runs" / "recipes" / "hey_nova.toml"
    assert (
        run("train-wakeword", "hey nova", "--recipe-only").stdout.strip() == f"recipe: {recipe.relative_to(tmp_path)}"
    )
    text = recipe.read_text()
    for key, value in {
        "per_label": "24",
        "confusable_voices": "2",
        "sentences": "4",
        "engines": '["espeak-ng", "flite"]',
        "epochs": "1",
        "noise_clips": "10",
    }.items():
        text = re.sub(rf"^{key} = .*$", f"{key} = {value}", text, count=1, flags=re.M)
    recipe.write_text(text)
    refused = subprocess.run(STREAMRNN + ["train", str(recipe)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert refused.returncode == 1 and refused.stderr.strip().endswith(
        "negatives:conversation-validation: not built to leave out hey nova"
        ' (streamrnn build-conversation --avoid "hey nova")'
    ), refused.stderr[-2000:]
    built = run(
        "build-conversation", "--avoid", "hey nova", "--sentences", "8", "4", "4", "--engines", "espeak-ng", "flite"
    )
    assert "no Speech Commands clips under the data root; dialogue only" in built.stderr
    assert [line.split()[0] for line in built.stdout.splitlines()[-3:]] == ["train", "validation", "eval"]
    assert list((cache / "conversation-validation" / "dialogue").glob("*.flac"))
    done = run("train", str(recipe))
    root = home / ".local" / "share" / "streamrnn" / "data"
    said = [line for line in done.stderr.splitlines() if "going on without it" in line]
    assert said == [
        f"data.path speech_commands: not under the data root {root}; going on without it",
        f"data.noise noise: not under the data root {root}; going on without it",
    ], done.stderr[-2000:]
    model = tmp_path / "runs" / "hey_nova" / "hey_nova.onnx"
    assert f"exported {model.relative_to(tmp_path)}" in done.stdout or f"exported {model}" in done.stdout
    installed = run("install-model", str(model)).stdout
    assert installed.startswith(f"installed hey_nova 0.1.0 as {home}/.local/share/streamrnn/models/hey_nova.onnx")
    detected = run("detect", "--model", "hey_nova", str(DEMO), "--scores")
    rows = [json.loads(line) for line in detected.stdout.splitlines()]
    assert rows and set(rows[0]["scores"]) == {"hey nova", "_background_"}
