"""Datasets: labelled clips read from disk, split by speaker (or recording), fitted to a length.

Layouts: `folders` (a folder per label of wav/flac), `speech_commands` (folders per word plus
`_unknown_`/`_silence_`; builds them from other words and `_background_noise_` where missing),
`ts` (sktime .ts sensor files) and `csv` (a folder per label of CSV recordings, a row per step).
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from streamrnn.audio import AudioError, read_audio

from .recipe import Recipe

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg"}


class DataError(ValueError):
    """Data that cannot be used; the message names the folder, file or label."""


@dataclass
class Example:
    samples: torch.Tensor  # [N] audio or [N, channels] sensor, already fitted to the clip length
    label: int
    group: str             # speaker or recording: never split across train/validation/test
    source: str


@dataclass
class Splits:
    labels: list[str]
    train: list[Example]
    validation: list[Example]
    test: list[Example]

    def summary(self, root: str) -> str:
        def count(xs):
            return f"{len(xs)} clips/{len({x.group for x in xs})} groups"
        return (f"{root}: {len(self.labels)} labels; train {count(self.train)}, validation "
                f"{count(self.validation)}, test {count(self.test)}; split by group")


def _stable_hash(text: str) -> float:
    return zlib.crc32(text.encode()) / 2**32


def _fit(samples: np.ndarray, length: int) -> torch.Tensor:
    """Cut the middle `length` samples, or pad zeros evenly on both sides."""
    n = len(samples)
    if n >= length:
        start = (n - length) // 2
        return torch.from_numpy(np.ascontiguousarray(samples[start:start + length]))
    pad = [((length - n) // 2, length - n - (length - n) // 2)] + [(0, 0)] * (samples.ndim - 1)
    return torch.from_numpy(np.pad(samples, pad))


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)


def _group(regex: re.Pattern | None, path: Path) -> str:
    if regex is None:
        return path.name
    match = regex.search(path.name)
    return match.group(1) if match else path.name


def _label_folders(recipe: Recipe, root: Path) -> dict[str, list[Path]]:
    """label -> files, for the folders and speech_commands layouts."""
    d = recipe.data
    if not root.is_dir():
        raise DataError(f"{root}: data folder does not exist")
    folders = {p.name: p for p in sorted(root.iterdir()) if p.is_dir()}
    labels = d.labels or sorted(n for n in folders if n != "_background_noise_")
    files = {}
    for label in labels:
        if label in folders:
            files[label] = _audio_files(folders[label])
        elif d.layout == "speech_commands" and label == "_unknown_":
            files[label] = [f for name, p in folders.items()
                            if name not in labels and not name.startswith("_") for f in _audio_files(p)]
        elif d.layout == "speech_commands" and label == "_silence_" and "_background_noise_" in folders:
            files[label] = _audio_files(folders["_background_noise_"])
        else:
            raise DataError(f"{root}: no folder for label {label!r}")
    return files


def _read_audio_examples(recipe: Recipe, root: Path) -> tuple[list[str], list[Example]]:
    d = recipe.data
    length = recipe.clip_samples
    regex = re.compile(d.group_regex) if d.group_regex else None
    files = _label_folders(recipe, root)
    labels = list(files)
    examples = []
    for index, (label, paths) in enumerate(files.items()):
        if d.max_per_label:
            paths = sorted(paths, key=lambda p: _stable_hash(p.name))[:d.max_per_label]
        for path in paths:
            try:
                samples = read_audio(path, d.sample_rate)
            except AudioError as exc:
                raise DataError(str(exc)) from None
            if path.parent.name == "_background_noise_":
                # long noise recordings become clip-length cuts, each its own group
                for i in range(0, len(samples) - length + 1, length):
                    examples.append(Example(torch.from_numpy(samples[i:i + length].copy()), index,
                                            f"{path.name}#{i // length}", str(path)))
            else:
                examples.append(Example(_fit(samples, length), index, _group(regex, path), str(path)))
    return labels, examples


def _parse_ts(path: Path) -> tuple[list[str], list[tuple[np.ndarray, str]]]:
    """sktime .ts: header lines, then `@data` and one `dim:dim:...:label` line per recording."""
    class_labels, rows, in_data = [], [], False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        lower = line.lower()
        if lower.startswith("@classlabel"):
            class_labels = line.split()[2:]
        elif lower.startswith("@data"):
            in_data = True
        elif in_data:
            *dims, label = line.split(":")
            try:
                series = np.array([[float(v) for v in dim.split(",")] for dim in dims], np.float32)
            except ValueError:
                raise DataError(f"{path}:{number}: not a row of numbers") from None
            rows.append((series.T, label.strip()))
    if not rows:
        raise DataError(f"{path}: no @data rows")
    return class_labels, rows


def _read_csv(path: Path) -> np.ndarray:
    lines = path.read_text().splitlines()
    try:
        float(lines[0].split(",")[0])
        skip = 0
    except (ValueError, IndexError):
        skip = 1
    try:
        return np.loadtxt(path, delimiter=",", skiprows=skip, dtype=np.float32, ndmin=2)
    except ValueError as exc:
        raise DataError(f"{path}: not a CSV of numbers ({exc})") from None


def _read_sensor_examples(recipe: Recipe, root: Path) -> tuple[list[str], list[Example]]:
    d = recipe.data
    length = recipe.clip_samples
    recordings: list[tuple[np.ndarray, str, str]] = []  # (samples, label, group)
    if d.layout == "ts":
        files = sorted(root.glob("*.ts")) if root.is_dir() else [root]
        if not files or not files[0].exists():
            raise DataError(f"{root}: no .ts files")
        found = []
        for f in files:
            class_labels, rows = _parse_ts(f)
            found += [x for x in class_labels if x not in found]
            recordings += [(s, label, f"{f.name}#{i}") for i, (s, label) in enumerate(rows)]
        labels = d.labels or found
    else:
        if not root.is_dir():
            raise DataError(f"{root}: data folder does not exist")
        labels = d.labels or sorted(p.name for p in root.iterdir() if p.is_dir())
        for label in labels:
            if not (root / label).is_dir():
                raise DataError(f"{root}: no folder for label {label!r}")
            recordings += [(_read_csv(f), label, f"{label}/{f.name}") for f in sorted((root / label).glob("*.csv"))]
    examples = []
    for samples, label, group in recordings:
        if label not in labels:
            continue
        if samples.shape[1] != d.channels:
            raise DataError(f"{group}: {samples.shape[1]} channels, recipe data.channels = {d.channels}")
        examples.append(Example(_fit(samples, length), labels.index(label), group, group))
    return list(labels), examples


def load_splits(recipe: Recipe) -> Splits:
    """Read the recipe's dataset and split it by group (speaker or recording)."""
    d = recipe.data
    root = Path(d.root) / d.path
    if not root.exists():
        raise DataError(f"{root}: data path does not exist (data.root={d.root!r}, data.path={d.path!r})")
    reader = _read_audio_examples if d.kind == "audio" else _read_sensor_examples
    labels, examples = reader(recipe, root)
    if d.background_label not in labels:
        raise DataError(f"{root}: background label {d.background_label!r} is not among labels {labels}")
    counts = Counter(x.label for x in examples)
    empty = [label for i, label in enumerate(labels) if not counts[i]]
    if empty:
        raise DataError(f"{root}: no examples for label(s) {', '.join(empty)}")
    splits = Splits(labels, [], [], [])
    for x in examples:
        h = _stable_hash(x.group)
        part = splits.test if h < d.test else splits.validation if h < d.test + d.validation else splits.train
        part.append(x)
    if not splits.train or (d.validation and not splits.validation):
        raise DataError(f"{root}: too few groups to split ({len(examples)} examples)")
    return splits


def load_noise(recipe: Recipe) -> list[torch.Tensor]:
    """Background noise recordings for augmentation, at the recipe's rate."""
    d = recipe.data
    if not d.noise:
        return []
    folder = Path(d.root) / d.noise
    if not folder.is_dir():
        raise DataError(f"{folder}: noise folder does not exist (data.noise={d.noise!r})")
    try:
        noise = [torch.from_numpy(read_audio(p, d.sample_rate)) for p in _audio_files(folder)]
    except AudioError as exc:
        raise DataError(str(exc)) from None
    if not noise:
        raise DataError(f"{folder}: no audio files for noise")
    return noise
