"""`streamrnn distill RECIPE.toml`: the student encoder (training/student.py) trained to give the
teacher's embedding (training/teacher.py) for every 80 ms of audio.

Audio: the clip folders of `speech` (only speakers of the training split that the speech recipes
use, so no model on the encoder is tested on audio it learned from), the long recordings of
`negatives` (Debian speech and music) and `sentences` synthetic sentences in every voice of
`engines`; each source is joined and cut into sequences of `seconds`, and each sequence is taken
`copies` times (the first clean, the others through [augment]: noise, reverberation, gain). The
augmented audio and the teacher's embeddings of it are computed once and cached beside the
checkpoint (any student shape reuses them); the epochs read only the cache. Agreement with the
teacher is measured on the held-out speakers and on the `held_out` recordings, none of which the
student trains on.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from streamrnn.audio import read_many
from streamrnn.recipe.datasets import audio_files, audio_sets, data_path, default_data_root, group_of, split_of
from streamrnn.recipe.schema import TEACHER_RATE, AugmentConfig, RecipeError, choice
from streamrnn.settings import build, read_toml

from .augment import Augmenter
from .data import noise_recordings
from .schedule import cosine_rate, epoch_order
from .student import FRONTS, StudentEncoder, steps_per_embedding
from .synth import check_engines, sentences, speak_all, voices
from .teacher import ATTRIBUTION as TEACHER_ATTRIBUTION
from .teacher import TeacherEncoder

BATCH = 32  # sequences per teacher call when caching


@dataclass
class DistillData:
    root: str = ""  # "": $STREAMRNN_DATA or the user's data folder (as recipes)
    speech: list[str] = field(default_factory=lambda: ["speech_commands"])  # clip folders split by speaker
    group_regex: str = "([0-9a-f]{8})_nohash"
    validation: float = 0.1  # speaker shares held out, as the speech recipes split them
    test: float = 0.1
    negatives: list[str] = field(default_factory=list)  # folders of long recordings, trained on
    max_minutes: float = 60.0  # at most this much of each speech and negatives folder
    held_out: list[str] = field(default_factory=list)  # folders only measured on
    held_out_minutes: float = 15.0  # of each held_out folder
    noise: str = "noise"  # folder mixed in by [augment]
    sentences: int = 0  # synthetic sentences, each in its own voice
    engines: list[str] = field(default_factory=lambda: ["espeak-ng"])
    seconds: float = 8.0  # sequence length
    copies: int = 2  # versions of each sequence: the clean one, then augmented ones


@dataclass
class DistillModel:
    hidden: int = 192
    layers: int = 2
    n_mels: int = 40  # bands of the front end
    front: str = choice(*FRONTS)  # "logmel", or "filterbank": learned band filters (training/frontend.py)
    stack: int = 4  # 10-ms frames per GRU step: 4 (40 ms) or 8 (80 ms, one step per embedding)


@dataclass
class DistillTrain:
    epochs: int = 10
    batch_size: int = 32
    lr: float = 2e-3
    grad_clip: float = 1.0
    threads: int = 0  # torch CPU threads; 0: torch's default
    out_dir: str = "runs/{name}"


@dataclass
class DistillRecipe:
    name: str = "encoder"
    version: str = "0.1.0"
    attribution: str = ""  # the audio it is distilled on (the teacher's is added)
    seed: int = 0
    data: DistillData = field(default_factory=DistillData)
    model: DistillModel = field(default_factory=DistillModel)
    train: DistillTrain = field(default_factory=DistillTrain)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


def load_distill_recipe(path: str | Path, data_root: str | None = None) -> DistillRecipe:
    recipe = build(DistillRecipe, read_toml(path, RecipeError), str(path), error=RecipeError)
    recipe.data.root = data_root or recipe.data.root or default_data_root()
    recipe.data.negatives = audio_sets(recipe.data.negatives)
    recipe.data.held_out = audio_sets(recipe.data.held_out)
    recipe.augment.background = audio_sets(recipe.augment.background)
    d = recipe.data
    if d.seconds * TEACHER_RATE % 1280 or d.seconds <= 0:
        raise RecipeError(f"{path}: data.seconds must be a positive multiple of 0.08")
    if d.copies < 1:
        raise RecipeError(f"{path}: data.copies must be at least 1")
    try:
        steps_per_embedding(recipe.model.stack)
    except ValueError as exc:
        raise RecipeError(f"{path}: model.{exc}") from None
    for folder in [*d.speech, *d.negatives, *d.held_out]:
        if not data_path(d.root, folder).is_dir():
            raise RecipeError(f"{path}: {folder}: no such folder (Debian speech and music: streamrnn fetch-negatives)")
    if d.sentences:
        check_engines(d.engines)
    return recipe


def _cut(audio: np.ndarray, length: int) -> list[np.ndarray]:
    """Sequences of `length` samples; a last part of at least half a sequence is padded with silence."""
    parts = [audio[i : i + length] for i in range(0, len(audio), length)]
    return [np.pad(p, (0, length - len(p))) for p in parts if len(p) >= length // 2]


def _folder_audio(folder: Path, minutes: float, rate: int) -> np.ndarray:
    files = audio_files(folder, recursive=True)
    audio = np.concatenate(list(read_many(files, rate).values()))
    return audio[: int(minutes * 60 * rate)]


def _sources(recipe: DistillRecipe) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(training audio, held-out audio) per source name, each one long array."""
    d, rate = recipe.data, TEACHER_RATE
    train, held_out = {}, {}
    regex = re.compile(d.group_regex) if d.group_regex else None
    for folder in d.speech:
        paths = audio_files(data_path(d.root, folder), recursive=True)
        random.Random(recipe.seed).shuffle(paths)
        clips = read_many(paths, rate)
        split = {p: split_of(group_of(regex, p), d.validation, d.test) for p in paths}
        train[folder] = np.concatenate([clips[p] for p in paths if split[p] == "train"])[
            : int(d.max_minutes * 60 * rate)
        ]
        held_out[f"{folder} (test speakers)"] = np.concatenate([clips[p] for p in paths if split[p] == "test"])
    for folder in d.negatives:
        train[Path(folder).name] = _folder_audio(data_path(d.root, folder), d.max_minutes, rate)
    for folder in d.held_out:
        held_out[Path(folder).name] = _folder_audio(data_path(d.root, folder), d.held_out_minutes, rate)
    if d.sentences:
        pool = sentences([])
        order = random.Random(recipe.seed).sample(pool, min(len(pool), d.sentences))
        texts = [order[i % len(order)] for i in range(d.sentences)]
        gap = np.zeros(rate // 5, np.float32)
        spoken = speak_all(
            list(zip(texts, voices(d.engines, len(texts), recipe.seed))), rate, "synthetic sentences", None
        )
        train["synthetic sentences"] = np.concatenate([x for s in spoken for x in (s, gap)])
    return train, held_out


@dataclass
class Cache:
    """Per sequence: its audio as the student hears it and the teacher's embeddings (float16)."""

    audio: torch.Tensor  # [S, N]
    targets: torch.Tensor  # [S, T / 8, 96]
    source: list[str]  # the source of each sequence
    hours: dict[str, float]  # per source, augmented copies counted


@torch.no_grad()
def _compute(
    sequences: list[tuple[str, np.ndarray]],
    augment: Augmenter | None,
    teacher: TeacherEncoder,
    what: str,
) -> Cache:
    """Each (source, samples) sequence, augmented where `augment` is given, and the teacher's
    embeddings of it."""
    kept, targets = [], []
    for s in tqdm(range(0, len(sequences), BATCH), desc=what, unit="batch"):
        audio = torch.from_numpy(np.stack([x for _, x in sequences[s : s + BATCH]]))
        if augment is not None:
            audio = augment.waveforms(audio)
        targets.append(teacher(audio, teacher.zero_state(len(audio)))[0].half())
        kept.append(audio.half())
    names = [name for name, _ in sequences]
    seconds = sequences[0][1].shape[0] / TEACHER_RATE
    hours = {n: names.count(n) * seconds / 3600 for n in dict.fromkeys(names)}
    return Cache(torch.cat(kept), torch.cat(targets), names, hours)


def _key(recipe: DistillRecipe) -> str:
    settings = json.dumps([asdict(recipe.data), asdict(recipe.augment), recipe.seed])
    return hashlib.sha256(settings.encode()).hexdigest()[:16]


def build_cache(recipe: DistillRecipe, out: Path) -> tuple[Cache, Cache]:
    """(training cache, held-out cache), computed once per data setting (any student shape) and
    kept in `out`."""
    path = out / f"cache-{_key(recipe)}.pt"
    if path.is_file():
        saved = torch.load(path, weights_only=False)
        return Cache(**saved["train"]), Cache(**saved["held_out"])
    torch.manual_seed(recipe.seed)
    train_audio, held_audio = _sources(recipe)
    length = round(recipe.data.seconds * TEACHER_RATE)
    teacher = TeacherEncoder()
    noise = noise_recordings(recipe.data.root, recipe.data.noise, recipe.augment.background, TEACHER_RATE)
    augmenter = Augmenter(recipe.augment, TEACHER_RATE, noise)
    seqs = [(name, x) for name, audio in train_audio.items() for x in _cut(audio, length)]
    parts = [_compute(seqs, None, teacher, "teacher: clean")]
    for copy in range(1, recipe.data.copies):
        parts.append(_compute(seqs, augmenter, teacher, f"teacher: copy {copy + 1}"))
    train = Cache(
        torch.cat([p.audio for p in parts]),
        torch.cat([p.targets for p in parts]),
        [n for p in parts for n in p.source],
        {n: sum(p.hours.get(n, 0) for p in parts) for n in parts[0].hours},
    )
    held = _compute(
        [(name, x) for name, audio in held_audio.items() for x in _cut(audio, length)],
        None,
        teacher,
        "teacher: held out",
    )
    torch.save({"train": asdict(train), "held_out": asdict(held)}, path)
    return train, held


def _frames(student: StudentEncoder, audio: torch.Tensor) -> torch.Tensor:
    """The student's front-end frames of cached sequences [S, N] (float16) from zero state."""
    return student.frames(audio.float(), student.zero_state(len(audio))[0])[0]


def _parts(audio: torch.Tensor) -> list[torch.Tensor]:
    """Cached sequences in groups small enough to run through the student at once."""
    return [audio[s : s + 64] for s in range(0, len(audio), 64)]


@torch.no_grad()
def agreement(student: StudentEncoder, cache: Cache) -> dict[str, dict[str, float]]:
    """Per source: R^2 of the student's embeddings against the teacher's (1 - squared error over
    the targets' variance) and their mean cosine similarity."""
    student.eval()
    predicted = torch.cat(
        [student.encode(_frames(student, a), student.zero_state(len(a))[1])[0] for a in _parts(cache.audio)]
    )
    result = {}
    for name in dict.fromkeys(cache.source):
        rows = torch.tensor([n == name for n in cache.source])
        p, t = (
            predicted[rows].reshape(-1, predicted.shape[-1]),
            cache.targets[rows].float().reshape(-1, predicted.shape[-1]),
        )
        r2 = 1 - ((p - t) ** 2).sum() / ((t - t.mean(0)) ** 2).sum()
        cosine = torch.nn.functional.cosine_similarity(p, t, dim=1).mean()
        result[name] = {
            "r2": round(float(r2), 4),
            "cosine": round(float(cosine), 4),
            "hours": round(cache.hours[name], 3),
        }
    return result


def distill(recipe: DistillRecipe) -> Path:
    """Cache, train, measure; writes student.pt and report.json into the output folder."""
    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    torch.manual_seed(recipe.seed)
    out = Path(recipe.train.out_dir.format(name=recipe.name))
    out.mkdir(parents=True, exist_ok=True)
    m = recipe.model
    attribution = "; ".join(
        x
        for x in (
            f"speech encoder: streamrnn student {recipe.version}, distilled from "
            + TEACHER_ATTRIBUTION.removeprefix("speech encoder: "),
            recipe.attribution,
        )
        if x
    )
    student = StudentEncoder(m.hidden, m.layers, m.n_mels, front=m.front, stack=m.stack, attribution=attribution)
    started = time.time()
    train, held = build_cache(recipe, out)
    cached = time.time() - started
    with torch.no_grad():
        flat = torch.cat([_frames(student, a) for a in _parts(train.audio[::7])]).flatten(0, 1)
    student.norm.set_statistics(flat.mean(0), flat.std(0))
    targets = train.targets[::7].float().reshape(-1, train.targets.shape[-1])
    student.target_mean.copy_(targets.mean(0))
    student.target_std.copy_(targets.std(0).clamp_min(1e-3))
    optimizer = torch.optim.AdamW(student.parameters(), lr=recipe.train.lr, weight_decay=1e-4)
    print(
        f"distill: {len(train.audio)} training sequences ({sum(train.hours.values()):.2f} h: "
        + ", ".join(f"{k} {v:.2f} h" for k, v in train.hours.items())
        + f"), cached in {cached:.0f} s",
        flush=True,
    )
    for epoch in range(recipe.train.epochs):
        student.train()
        for group in optimizer.param_groups:
            group["lr"] = cosine_rate(recipe.train.lr, epoch, recipe.train.epochs)
        order = epoch_order(len(train.audio), recipe.seed, epoch)
        size, total = recipe.train.batch_size, 0.0
        batches = [order[s : s + size] for s in range(0, len(order), size)]
        for rows in tqdm(batches, desc=f"epoch {epoch + 1}/{recipe.train.epochs}", leave=False, unit="batch"):
            targets = train.targets[rows].float()
            predicted, _ = student.standardised(_frames(student, train.audio[rows]), student.zero_state(len(rows))[1])
            loss = ((predicted - (targets - student.target_mean) / student.target_std) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), recipe.train.grad_clip)
            optimizer.step()
            total += loss.item()
        scores = agreement(student, held)
        print(
            f"epoch {epoch + 1}: loss {total / len(batches):.4f}  held-out "
            + ", ".join(f"{k} R2 {v['r2']:.3f} cos {v['cosine']:.3f}" for k, v in scores.items()),
            flush=True,
        )
    path = out / "student.pt"
    student.save(path, version=recipe.version)
    report = {
        "name": recipe.name,
        "version": recipe.version,
        "training_hours": train.hours,
        "held_out": agreement(student, held),
        "cache_seconds": round(cached),
        "total_seconds": round(time.time() - started),
        "config": asdict(recipe),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path} and {out / 'report.json'}", flush=True)
    return path
