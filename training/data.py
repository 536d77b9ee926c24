"""Datasets: labelled clips read from disk, split by speaker (or recording), fitted to a length.

Audio layouts are listed by `streamrnn.recipe.datasets` (folders, speech_commands, files); sensor
layouts here: `ts` (sktime .ts files) and `csv` (a folder per label of CSV recordings, a row per
step). `data.noise_clips` adds background-label clips cut from the noise folder. Background-label
recordings longer than two clips (negative speech, music) become consecutive clip-length cuts of
the same group, so a recording stays within one split.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from streamrnn.audio import AudioError, read_many
from streamrnn.recipe.datasets import (
    DataError,
    audio_files,
    data_path,
    recipe_clips,
    recipe_split,
    sensor_recordings,
    skip_missing,
)
from streamrnn.recipe.schema import Recipe


@dataclass
class Example:
    samples: torch.Tensor  # [N] audio or [N, channels] sensor, already fitted to the clip length
    label: int
    group: str  # speaker or recording: never split across train/validation/test
    source: str
    train_only: bool = False  # from a `train_only` source: never validation or test


@dataclass
class Splits:
    labels: list[str]
    train: list[Example]
    validation: list[Example]
    test: list[Example]

    def summary(self, root: str) -> str:
        def count(xs):
            synthetic = sum(x.group.startswith("synth") for x in xs)
            return f"{len(xs)} clips/{len({x.group for x in xs})} groups" + (
                f" ({synthetic} synthetic)" if synthetic else ""
            )

        return (
            f"{root}: {len(self.labels)} labels; train {count(self.train)}, validation "
            f"{count(self.validation)}, test {count(self.test)}; split by group"
        )


def _fit(samples: np.ndarray, length: int) -> torch.Tensor:
    """Cut the middle `length` samples, or pad zeros evenly on both sides."""
    n = len(samples)
    if n >= length:
        start = (n - length) // 2
        return torch.from_numpy(np.ascontiguousarray(samples[start : start + length]))
    pad = [((length - n) // 2, length - n - (length - n) // 2)] + [(0, 0)] * (samples.ndim - 1)
    return torch.from_numpy(np.pad(samples, pad))


def _read_audio_examples(recipe: Recipe, path: str) -> tuple[list[str], list[Example]]:
    d = recipe.data
    length = recipe.clip_samples
    labels, clips = recipe_clips(d, path)
    try:
        audio = read_many([clip.path for clip in clips], d.sample_rate)
    except AudioError as exc:
        raise DataError(str(exc)) from None
    examples = []
    for clip in clips:
        if clip.path not in audio:
            continue  # empty file, counted by read_many
        index = labels.index(clip.label)
        if clip.path.parent.name == "_background_noise_":  # 6 recordings: a group per cut
            cuts = _cuts(audio[clip.path], length, longer_than=0)
            examples += [Example(x, index, f"{clip.path.name}#{i}", str(clip.path)) for i, x in enumerate(cuts)]
        else:
            long = 2 * length if clip.label == d.background_label else float("inf")
            cuts = _cuts(audio[clip.path], length, longer_than=long)
            examples += [Example(x, index, clip.group, str(clip.path), clip.train_only) for x in cuts]
    return labels, examples


def _cuts(samples: np.ndarray, length: int, longer_than: float) -> list[torch.Tensor]:
    """A recording longer than `longer_than` samples as consecutive clip-length cuts; any other
    fitted to the clip length."""
    if len(samples) > longer_than:
        return [torch.from_numpy(samples[i : i + length].copy()) for i in range(0, len(samples) - length + 1, length)]
    return [_fit(samples, length)]


def _read_sensor_examples(recipe: Recipe, root: Path) -> tuple[list[str], list[Example]]:
    d = recipe.data
    labels, recordings = sensor_recordings(root, d.layout, d.labels)
    examples = []
    for samples, label, group in recordings:
        if samples.shape[1] != d.channels:
            raise DataError(f"{group}: {samples.shape[1]} channels, recipe data.channels = {d.channels}")
        examples.append(Example(_fit(samples, recipe.clip_samples), labels.index(label), group, group))
    return labels, examples


def load_splits(recipe: Recipe) -> Splits:
    """Read the recipe's dataset and split it by group (speaker or recording); with
    `data.test_path`, that dataset is the test set and the main one gives train and validation."""
    d = recipe.data
    labels, examples = _read(recipe, d.path)
    if d.noise_clips and d.background_label not in labels:
        labels.append(d.background_label)
    root = data_path(d.root, d.path)
    if d.background_label not in labels:
        raise DataError(f"{root}: background label {d.background_label!r} is not among labels {labels}")
    if d.noise_clips:
        examples += _noise_examples(recipe, labels.index(d.background_label))
    splits = Splits(labels, [], [], [])
    for x in examples:
        getattr(splits, recipe_split(x.group, d, x.train_only)).append(x)
    _add_synth(recipe, splits)
    counts = Counter(x.label for x in splits.train + splits.validation + splits.test)
    empty = [label for i, label in enumerate(labels) if not counts[i]]
    if empty:
        raise DataError(f"{root}: no examples for label(s) {', '.join(empty)}")
    if d.test_path:
        test_labels, splits.test = _read(recipe, d.test_path)
        for x in splits.test:  # the test set may list its labels in another order
            x.label = labels.index(test_labels[x.label]) if test_labels[x.label] in labels else -1
        splits.test = [x for x in splits.test if x.label >= 0]
    if not splits.train or (d.validation and not splits.validation):
        raise DataError(f"{root}: too few groups to split ({len(examples)} examples)")
    return splits


def _add_synth(recipe: Recipe, splits: Splits) -> None:
    """Synthetic speech (see synth.py): phrases go to training, except a `synth.validation` share
    of voices of a label with no real validation clips; non-phrase speech goes to training as
    background. Long sentences become clip-length cuts."""
    s, labels, length = recipe.synth, splits.labels, recipe.clip_samples
    if not s.per_label:
        return
    from .synth import default_cache, held_out, near_word_texts, negative_clips, negative_texts, synth_clips

    phrases = s.phrases or {x: x for x in labels if not x.startswith("_") and x != recipe.data.background_label}
    validated = {x.label for x in splits.validation}
    rate, cache = recipe.data.sample_rate, default_cache() if s.cache else None
    for samples, label, voice in synth_clips(phrases, s.per_label, s.engines, rate, recipe.seed, s.validation, cache):
        index, group = labels.index(label), f"synth:{voice.key}"
        held = index not in validated and held_out(voice, s.validation)
        (splits.validation if held else splits.train).append(Example(_fit(samples, length), index, group, group))
    background = labels.index(recipe.data.background_label)
    reported = [text for label, text in phrases.items() if label not in recipe.data.unreported]
    texts = [data_path(recipe.data.root, folder) for folder in s.sentence_texts]
    negatives = negative_texts(reported, s.confusable_voices, s.sentences, texts, s.engines, recipe.seed)
    if s.near_words:
        negatives += near_word_texts(reported, s.near_words, s.near_word_voices, texts, s.engines, recipe.seed)
    for samples, group in negative_clips(negatives, rate, cache):
        splits.train += [Example(x, background, group, group) for x in _cuts(samples, length, 2 * length)]


def _read(recipe: Recipe, path: str) -> tuple[list[str], list[Example]]:
    root = data_path(recipe.data.root, path)
    if not root.exists() and not (recipe.data.layout == "tree" and skip_missing(recipe.data, path, "data.path")):
        raise DataError(f"{root}: data path does not exist (data.root={recipe.data.root!r}, path={path!r})")
    if recipe.data.kind == "audio":
        return _read_audio_examples(recipe, path)
    return _read_sensor_examples(recipe, root)


def _noise_examples(recipe: Recipe, label: int) -> list[Example]:
    """`data.noise_clips` clip-length cuts of the noise recordings at fixed random places and
    gains; each cut is its own group."""
    noise = load_noise(recipe)
    length = recipe.clip_samples
    generator = torch.Generator().manual_seed(recipe.seed)
    examples = []
    for i in range(recipe.data.noise_clips):
        source = noise[i % len(noise)]
        if len(source) < length:
            source = source.repeat(length // len(source) + 1)
        start = int(torch.randint(len(source) - length + 1, (), generator=generator))
        gain = 10 ** (float(torch.empty(()).uniform_(-30, 0, generator=generator)) / 20)
        examples.append(Example(source[start : start + length] * gain, label, f"noise#{i}", f"noise#{i}"))
    return examples


def load_noise(recipe: Recipe) -> list[torch.Tensor]:
    """Recordings mixed in as noise by augmentation, at the recipe's rate: the noise folder and
    the `augment.background` folders (at any depth)."""
    d = recipe.data
    noise = "" if skip_missing(d, d.noise, "data.noise") else d.noise
    return noise_recordings(d.root, noise, recipe.augment.background, d.sample_rate)


def noise_recordings(root: str, noise_folder: str, background: list[str], rate: int) -> list[torch.Tensor]:
    """The noise folder's recordings and the background folders' (at any depth), at `rate`."""
    folders = ([(noise_folder, "data.noise")] if noise_folder else []) + [(f, "augment.background") for f in background]
    noise = []
    for name, setting in folders:
        folder = data_path(root, name)
        if not folder.is_dir():
            raise DataError(f"{folder}: folder does not exist ({setting}={name!r})")
        files = audio_files(folder, recursive=setting == "augment.background")
        if not files:
            raise DataError(f"{folder}: no audio files ({setting}={name!r})")
        try:
            noise += [torch.from_numpy(x) for x in read_many(files, rate).values()]
        except AudioError as exc:
            raise DataError(str(exc)) from None
    return noise
