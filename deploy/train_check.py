"""`streamrnn train-check`: a second look (contract.Check) for one label of a contract file on the
speech encoder, trained on the recipe's training side only.

- Windows: the encoder's last `frames` embeddings at a frame.
- Positives: the training phrases placed in the training background (clean, 10 and 0 dB SNR);
  every frame from a phrase's start to 0.5 s after its end where the file's score reaches 0.2.
- Negatives: every frame where the score reaches 0.01 in the training background and in the
  recipe's whole background folders, as recorded, with the gain moved, with the recipe's noise
  under it, and sped up or slowed down; the dictionary words nearest the phrase, spoken; and
  random frames. The file has learnt its own training audio, so that audio as it is gives few
  near-fires.
- A one-hidden-layer classifier on them; then `from` (where the check starts looking) and the
  label's threshold are picked on the recipe's validation streams as `train` picks thresholds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from streamrnn.contract import AUDIO_INPUT, EMBEDDINGS_OUTPUT, SCORES_OUTPUT, Check, ModelInfo
from streamrnn.deploy.check import window_graph, with_embeddings, write_check
from streamrnn.evaluation.detection import compose, pick_thresholds, read_negatives
from streamrnn.recipe.datasets import data_path
from streamrnn.recipe.schema import Recipe
from streamrnn.runtime import StreamingModel, windows
from streamrnn.training.data import Splits, load_noise, load_splits
from streamrnn.training.synth import default_cache, near_word_texts, negative_clips

POSITIVE_FROM, NEGATIVE_FROM = 0.2, 0.01  # the first-stage scores that make a training window
AFTER_PHRASE = 0.5  # seconds after a placed phrase's end that still count as it
STARTS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)  # the `from` values tried on validation
STREAM_SECONDS = 600  # the training background strung into streams of this length
PHRASE_ROOM = 4.0  # seconds of background per placed phrase (a phrase and compose's 2-s gaps)
GAINS_DB, SPEEDS, NOISE_SNR_DB = (-12.0, 10.0), (0.88, 1.12), (0.0, 10.0)
RANDOM_PER_STREAM = 400
BATCH = 16  # streams a session call


@dataclass
class CheckSettings:
    frames: int = 20  # 1.6 s of 80-ms frames
    hidden: int = 32
    epochs: int = 8
    fa_per_hour: float = 0.0  # 0: the recipe's train.target_fa_per_hour
    near_words: int = 60  # the dictionary words nearest the phrase (training/near_words.py)
    near_word_voices: int = 8


class EncoderFrames:
    """First-stage scores of one label and encoder frames of whole signals (a plain session on
    the file with its embeddings as an output, in long chunks)."""

    def __init__(self, info: ModelInfo, label: str, threads: int = 2):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(with_embeddings(info.path).SerializeToString(), options)
        self.states = [(i.name, i.shape[1:]) for i in self.session.get_inputs()[1:]]
        self.hop = info.frame_hop
        self.label = info.labels.index(label)

    def __call__(self, signals: list[np.ndarray], batch: int = BATCH, chunk: int = 750) -> list[tuple]:
        """[(scores[F], embeddings[F, dim])] per signal, its tail padded to a whole frame."""
        out = []
        for start in range(0, len(signals), batch):
            group = signals[start : start + batch]
            lengths = [-(-len(x) // self.hop) for x in group]
            audio = np.zeros((len(group), max(lengths) * self.hop), np.float32)
            for i, x in enumerate(group):
                audio[i, : len(x)] = x
            states = {name: np.zeros((len(group), *shape), np.float32) for name, shape in self.states}
            scores, frames = [], []
            for c in range(0, audio.shape[1], chunk * self.hop):
                result = dict(
                    zip(
                        [o.name for o in self.session.get_outputs()],
                        self.session.run(None, {AUDIO_INPUT: audio[:, c : c + chunk * self.hop], **states}),
                    )
                )
                states = {name: result["next_" + name] for name, _ in self.states}
                scores.append(result[SCORES_OUTPUT][:, :, self.label])
                frames.append(result[EMBEDDINGS_OUTPUT].transpose(1, 0, 2))
            s, e = np.concatenate(scores, 1), np.concatenate(frames, 1)
            out += [(s[i, :n].copy(), e[i, :n].copy()) for i, n in enumerate(lengths)]
        return out


def _streams(clips: list[np.ndarray], rng: np.random.Generator, rate: float) -> list[np.ndarray]:
    joined = np.concatenate([clips[i] for i in rng.permutation(len(clips))])
    size = int(STREAM_SECONDS * rate)
    return [joined[i : i + size] for i in range(0, len(joined), size)]


def _altered(stream: np.ndarray, noise: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """The stream with its gain moved; with one of the recipe's noise recordings under it at
    NOISE_SNR_DB; sped up or slowed down."""
    louder = np.clip(stream * np.float32(10 ** (rng.choice(GAINS_DB) / 20)), -1, 1)
    copies = [louder]
    if noise:
        cut = np.resize(noise[rng.integers(len(noise))], len(stream))
        level = _rms(stream) / (_rms(cut) * 10 ** (rng.uniform(*NOISE_SNR_DB) / 20))
        copies.append(np.clip(stream + cut * np.float32(level), -1, 1))
    at = np.arange(0, len(stream) - 1, rng.choice(SPEEDS))
    return copies + [np.interp(at, np.arange(len(stream)), stream).astype(np.float32)]


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-12))


def mine(
    recipe: Recipe, splits: Splits, run: EncoderFrames, label: str, settings: CheckSettings
) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative training windows (see the module's docstring)."""
    rate, frames = recipe.data.sample_rate, settings.frames
    background = splits.labels.index(recipe.data.background_label)
    rng = np.random.default_rng(recipe.seed)
    beds = _streams([x.samples.numpy() for x in splits.train if x.label == background], rng, rate)
    folders = [
        str(data_path(recipe.data.root, x.path)) for x in recipe.data.extra if x.label == recipe.data.background_label
    ]
    beds += read_negatives(folders, rate).streams if folders else []
    phrases = [(x.samples.numpy(), label) for x in splits.train if splits.labels[x.label] == label]
    positives = []
    for k, snr in enumerate((None, 10.0, 0.0)):
        placed = _placed(beds, phrases, rate, snr, 1000 * k)
        for (scores, embeddings), (_, places) in zip(run([a for a, _ in placed]), placed):
            positives.append(_inside(scores, embeddings, places, frames, run.hop / rate))
    texts = [data_path(recipe.data.root, folder) for folder in recipe.synth.sentence_texts]
    near = near_word_texts(
        [label], settings.near_words, settings.near_word_voices, texts, recipe.synth.engines, recipe.seed
    )
    gap = np.zeros(int(rate / 2), np.float32)
    spoken = [np.concatenate([np.concatenate([x, gap]) for x, _ in negative_clips(near, int(rate), default_cache())])]
    noise = [x.numpy() for x in load_noise(recipe)]
    negatives = []
    for start in range(0, len(beds), BATCH):  # the altered copies a batch at a time: hours of audio each
        group = beds[start : start + BATCH]
        altered = [y for x in group for y in _altered(x, noise, rng)]
        for k, (scores, embeddings) in enumerate(run(group + altered + spoken * (start == 0))):
            negatives.append(_windows(embeddings, np.flatnonzero(scores >= NEGATIVE_FROM), frames))
            if k < len(group):
                negatives.append(_windows(embeddings, rng.integers(0, len(scores), RANDOM_PER_STREAM), frames))
    return np.concatenate(positives), np.concatenate(negatives)


def _placed(beds: list[np.ndarray], phrases: list, rate: float, snr: float | None, seed: int) -> list:
    """compose's (audio, placements) of every phrase, each bed taking as many as it has room for,
    and the beds used again until all are placed."""
    room = [max(0, int((len(b) / rate - 2) // PHRASE_ROOM)) for b in beds]
    if not any(room):
        raise ValueError(f"too little training background to place phrases in (a stream needs {PHRASE_ROOM + 2:g} s)")
    placed: list = []
    while (done := sum(len(p) for _, p in placed)) < len(phrases):
        for bed, n in zip(beds, room):
            if n and done < len(phrases):
                placed.append(compose(bed, phrases[done : done + n], rate, snr, seed + len(placed)))
                done += n
    return placed


def _inside(scores, embeddings, places, frames: int, frame_seconds: float) -> np.ndarray:
    """Windows at the frames from a placed phrase's start to AFTER_PHRASE after its end where the
    score reaches POSITIVE_FROM."""
    ends = (np.arange(len(scores)) + 1) * frame_seconds
    inside = np.zeros(len(scores), bool)
    for p in places:
        inside |= (ends >= p.start) & (ends <= p.end + AFTER_PHRASE)
    return _windows(embeddings, np.flatnonzero(inside & (scores >= POSITIVE_FROM)), frames)


def _windows(embeddings: np.ndarray, at: np.ndarray, frames: int) -> np.ndarray:
    """Windows as the runtime cuts them (runtime.windows), kept in half precision: hours of
    audio make tens of thousands."""
    return windows(embeddings, at, frames).astype(np.float16)


def fit(positives: np.ndarray, negatives: np.ndarray, settings: CheckSettings, seed: int) -> bytes:
    """The check's graph: standardised windows, dropout, one hidden ReLU layer, a sigmoid; the
    positives weighted up to the negatives' number; the standardisation folded into the first
    layer."""
    torch.manual_seed(seed)
    n, frames, dim = len(positives) + len(negatives), positives.shape[1], positives.shape[2]
    x = torch.from_numpy(np.concatenate([positives, negatives]).reshape(n, -1).astype(np.float32))
    y = torch.cat([torch.ones(len(positives)), torch.zeros(len(negatives))])
    mean, std = x.mean(0), x.std(0) + 1e-3
    x = (x - mean) / std
    first, last = torch.nn.Linear(frames * dim, settings.hidden), torch.nn.Linear(settings.hidden, 1)
    net = torch.nn.Sequential(torch.nn.Dropout(0.2), first, torch.nn.ReLU(), torch.nn.Dropout(0.2), last)
    optimizer = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-2)
    weight = torch.tensor(len(negatives) / len(positives))
    for epoch in range(settings.epochs):
        order, total = torch.randperm(n), 0.0
        for b in range(0, n, 256):
            i = order[b : b + 256]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x[i]).squeeze(1), y[i], pos_weight=weight)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(i)
        print(f"check epoch {epoch + 1}/{settings.epochs}: loss {total / n:.4f}", flush=True)
    with torch.no_grad():
        weight_in = first.weight / std
        bias_in = first.bias - weight_in @ mean
    return window_graph(
        weight_in.reshape(settings.hidden, frames, dim).numpy(),
        bias_in.numpy(),
        last.weight.detach().numpy()[0],
        float(last.bias.detach()[0]),
    )


def train_check(
    recipe: Recipe, path: str | Path, out: str | Path, label: str | None, settings: CheckSettings, version: str = ""
) -> dict:
    """Train a check for `label` of the file at `path` (default: its one reported label), pick
    `from` and the threshold on the recipe's validation streams, write the file to `out` (with
    `version`, if given) and OUT_check.json beside it; returns the report."""
    path, out = Path(path), Path(out)
    info = StreamingModel(path).info
    reported = [x for x in info.labels if x != info.background_label]
    if label is None and len(reported) != 1:
        raise ValueError(f"{path}: labels {reported}: name the one to check with --label")
    label = label or reported[0]
    if label not in reported:
        raise ValueError(f"{path}: --label {label!r} is not one of its labels {reported}")
    run = EncoderFrames(info, label)  # a file with no encoder frames is refused before the long part
    rate = settings.fa_per_hour or recipe.train.target_fa_per_hour
    if not rate or not recipe.train.validation_negatives:
        raise ValueError(
            f"{recipe.name}: train-check picks on train.validation_negatives at a false-accept rate "
            "(set train.target_fa_per_hour or --fa-per-hour)"
        )
    splits = load_splits(recipe)
    positives, negatives = mine(recipe, splits, run, label, settings)
    print(f"check windows: {len(positives)} positive, {len(negatives)} negative", flush=True)
    model = fit(positives, negatives, settings, recipe.seed)
    validation = read_negatives(
        [str(data_path(recipe.data.root, f)) for f in recipe.train.validation_negatives], recipe.data.sample_rate
    )
    phrases = [(x.samples.numpy(), label) for x in splits.validation if splits.labels[x.label] == label]
    if not phrases:
        raise ValueError(f"{recipe.name}: no validation clips of {label!r} to pick the check's thresholds on")
    tried = []
    for start in STARTS:
        candidate = write_check(path, out, Check(label, start, settings.frames, model), 0.5)
        picked = pick_thresholds(StreamingModel(candidate), validation, phrases, rate)["per_label"][label]
        tried.append({"from": start, **picked})
        print(
            f"check from {start}: threshold {picked['threshold']}, missed {picked['frr']}, "
            f"{picked['fa_per_hour']} false accepts/h",
            flush=True,
        )
    best = min(tried, key=lambda t: (t["fa_per_hour"] > rate, t["frr"], t["fa_per_hour"], -t["from"]))
    write_check(path, out, Check(label, best["from"], settings.frames, model), best["threshold"], version)
    report = {
        "model": str(path),
        "label": label,
        "settings": settings.__dict__,
        "windows": {"positive": len(positives), "negative": len(negatives)},
        "validation_hours": round(validation.hours, 3),
        "validation_positives": len(phrases),
        "target_fa_per_hour": rate,
        "tried": tried,
        "picked": best,
    }
    (out.parent / f"{out.stem}_check.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}: check from {best['from']}, threshold {best['threshold']}", flush=True)
    return report
