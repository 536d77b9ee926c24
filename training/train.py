"""`streamrnn train RECIPE.toml`: stateful training, validation and checkpoints (export: deploy/release.py).

Clips are joined into streams of `clips_per_sequence` clips and run with the recurrent state
carried from clip to clip (truncated BPTT cuts the gradient at segment boundaries), so the
model learns in the stateful mode it is served in. Readout per clip: max-pooling over frames
for each label and min-pooling for the background label ("nothing anywhere"); or, with
`target = "frame"`, the clip's label on every frame. Under torchrun the same code trains with
DistributedDataParallel.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from streamrnn.recipe.datasets import data_path
from streamrnn.recipe.schema import Recipe, RecipeError
from streamrnn.training.augment import Augmenter
from streamrnn.training.checkpoint import load_checkpoint, save_checkpoint
from streamrnn.training.conversation import CONVERSATION, built_avoiding
from streamrnn.training.data import Example, Splits, load_noise, load_splits
from streamrnn.training.model import StreamingRNN
from streamrnn.training.schedule import cosine_rate, epoch_order, epoch_seed
from streamrnn.training.wakeword import label as phrase_label

EVAL_BATCH = 256


@dataclass
class Rank:
    index: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.index == 0


def _start_distributed(recipe: Recipe) -> Rank:
    want = recipe.train.device
    cuda = torch.cuda.is_available() and want in ("auto", "cuda")
    if want == "cuda" and not torch.cuda.is_available():
        raise RecipeError(f"{recipe.source}: train.device = 'cuda' but no CUDA device is available")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Rank(device=torch.device("cuda" if cuda else "cpu"))
    dist.init_process_group("nccl" if cuda else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
    return Rank(dist.get_rank(), world, torch.device(f"cuda:{local}" if cuda else "cpu"))


def clip_log_scores(logits: torch.Tensor, background: int, readout: str) -> torch.Tensor:
    """Per-clip label scores from per-frame logits [B, T, L] (torch twin of
    streamrnn.evaluation.metrics.clip_scores). `peak`: max over frames of each label's log-probability, min
    over frames for the background label; `mean`: the mean log-probability over frames."""
    logp = torch.log_softmax(logits, dim=-1)
    if readout == "mean":
        return logp.mean(dim=1)
    is_background = torch.arange(logp.shape[-1], device=logp.device) == background
    return torch.where(is_background, logp.min(dim=1).values, logp.max(dim=1).values)


def clip_loss(logits: torch.Tensor, labels: torch.Tensor, background: int, target: str) -> torch.Tensor:
    """logits [B, clips, T, L], labels [B, clips]."""
    b, c, t, n = logits.shape
    if target == "frame":
        frame_labels = labels[:, :, None].expand(b, c, t).reshape(-1)
        return nn.functional.cross_entropy(logits.reshape(-1, n), frame_labels)
    scores = clip_log_scores(logits.reshape(b * c, t, n), background, "peak")
    return nn.functional.cross_entropy(scores, labels.reshape(-1))


def _stack(examples: list[Example]) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.stack([x.samples for x in examples]), torch.tensor([x.label for x in examples], dtype=torch.long))


def _sequences(train: list[Example], recipe: Recipe, epoch: int, rank: Rank) -> list[list[list[Example]]]:
    """This rank's batches for an epoch: [batch][sequence] lists of clips."""
    order = epoch_order(len(train), recipe.seed, epoch)
    per_seq = recipe.train.clips_per_sequence
    seqs = [[train[i] for i in order[s : s + per_seq]] for s in range(0, len(order) - per_seq + 1, per_seq)]
    size = recipe.train.batch_size
    batches = [seqs[s : s + size] for s in range(0, len(seqs), size)]
    usable = len(batches) - len(batches) % rank.world if rank.world > 1 else len(batches)
    return batches[rank.index : usable : rank.world]


@torch.no_grad()
def clip_probabilities(
    model: StreamingRNN, examples: list[Example], background: int, device
) -> tuple[np.ndarray, np.ndarray]:
    """Each clip run from zero state: (max over frames of each label's probability, log clip scores)."""
    model.eval()
    peaks, scores = [], []
    for s in range(0, len(examples), EVAL_BATCH):
        audio, _ = _stack(examples[s : s + EVAL_BATCH])
        logits, _ = model(audio.to(device), model.zero_state(len(audio)))
        peaks.append(torch.softmax(logits, -1).max(dim=1).values.cpu())
        scores.append(clip_log_scores(logits, background, model.readout).cpu())
    return torch.cat(peaks).numpy(), torch.cat(scores).numpy()


def accuracy(model: StreamingRNN, examples: list[Example], background: int, device) -> float:
    _, scores = clip_probabilities(model, examples, background, device)
    labels = np.array([x.label for x in examples])
    return float((scores.argmax(1) == labels).mean())


def choose_thresholds(
    model: StreamingRNN, examples: list[Example], labels: list[str], background: int, unreported: list[str], device
) -> dict[str, float]:
    """Per reported label, the threshold on the clip's peak probability with the best F1 on
    validation clips (see best_f1_threshold)."""
    peaks, _ = clip_probabilities(model, examples, background, device)
    truth = np.array([x.label for x in examples])
    return {
        label: best_f1_threshold(peaks[:, j], truth == j)
        for j, label in enumerate(labels)
        if j != background and label not in unreported
    }


def best_f1_threshold(peaks: np.ndarray, positive: np.ndarray) -> float:
    """The threshold on 0.05, 0.10 ... 0.95 with the best F1 of `peaks >= threshold` against
    `positive`; the middle one where several tie; 0.5 with no positives."""
    if not positive.any():
        return 0.5
    grid = np.round(np.arange(0.05, 0.96, 0.05), 2)
    f1 = np.array([2 * (positive & (peaks >= g)).sum() / (positive.sum() + (peaks >= g).sum()) for g in grid])
    best = grid[f1 == f1.max()]
    return float(best[len(best) // 2])


def _normalise(model: StreamingRNN, train: list[Example]) -> None:
    """Measure feature mean/std on (up to about 2000) training clips, spread over all labels,
    and keep them in the graph."""
    with torch.no_grad():
        audio, _ = _stack(train[:: max(1, len(train) // 2000)])
        feats, _ = model.features(audio, model.zero_state(len(audio)))
        flat = feats.reshape(-1, feats.shape[-1])
        model.norm.set_statistics(flat.mean(0), flat.std(0))


class DivergedError(ValueError):
    """A training run whose loss stopped being a number."""


@dataclass
class Run:
    """What a training run leaves for release: the recipe (labels resolved), its splits, the
    checkpoint with the best validation accuracy and the checkpoint of every epoch."""

    recipe: Recipe
    splits: Splits
    background: int
    best: Path
    epochs: list[Path]

    @property
    def trained_on(self) -> str:
        """The data the run trained on, for the model's metadata."""
        return self.splits.summary(str(Path(self.recipe.data.path)))


def _check_folders(recipe: Recipe) -> None:
    """Folders used only at the end or by synthesis: a missing one stops before any work."""
    needed = [("train.validation_negatives", f) for f in recipe.train.validation_negatives]
    needed += [("synth.sentence_texts", f) for f in recipe.synth.sentence_texts if recipe.synth.sentences]
    needed += [("data.extra", e.path) for e in recipe.data.extra if e.path.startswith(CONVERSATION)]
    labels = [x for x in recipe.data.labels if x != recipe.data.background_label]
    phrases = [phrase_label(recipe.synth.phrases.get(x, x)) for x in labels]
    for setting, folder in needed:
        path = data_path(recipe.data.root, folder)
        if folder.startswith(CONVERSATION):
            built = built_avoiding(path.parent)
            missing = [p for p in phrases if p not in built]
            if missing or not path.is_dir():
                why = f"not built to leave out {', '.join(missing)}" if missing else "no such folder"
                args = " ".join(f"--avoid {json.dumps(p)}" for p in [*built, *missing])
                raise RecipeError(f"{recipe.source}: {setting} {folder}: {why} (streamrnn build-conversation {args})")
        elif not path.is_dir():
            raise RecipeError(
                f"{recipe.source}: {setting} {folder}: no such folder "
                "(the Debian speech, music and text: streamrnn fetch-negatives)"
            )


def _optimizer(model: StreamingRNN, recipe: Recipe) -> tuple[torch.optim.AdamW, list[float]]:
    """AdamW over the model's trained parameters, and each parameter group's base rate: the head at
    `train.lr`, and with `train.encoder_lr` the student encoder fine-tuned at its own rate."""
    encoder = model.frontend if recipe.train.encoder_lr else None  # finish() allows it with the student only
    tuned = {id(p) for p in encoder.requires_grad_(True).parameters()} if encoder is not None else set()
    groups = [([p for p in model.parameters() if id(p) not in tuned], recipe.train.lr)]  # (parameters, rate)
    if encoder is not None:
        groups.append((list(encoder.parameters()), recipe.train.encoder_lr))
    optimizer = torch.optim.AdamW(
        [{"params": params, "lr": rate} for params, rate in groups], weight_decay=recipe.train.weight_decay
    )
    return optimizer, [rate for _, rate in groups]


def _train_epoch(net, model, recipe, batches, optimizer, augmenter, background, epoch, rank) -> float:
    """One pass over the epoch's batches of streams (state carried from clip to clip, gradients cut
    every `tbptt_frames`); the mean loss. A loss that is not a number stops the run."""
    frames_per_clip = recipe.clip_samples // model.frame_hop
    detach_every = recipe.train.tbptt_frames or frames_per_clip
    hook = augmenter.features if recipe.data.kind == "audio" else None
    per_seq = recipe.train.clips_per_sequence
    bar = tqdm(
        batches, desc=f"epoch {epoch + 1}/{recipe.train.epochs}", disable=not rank.main, leave=False, unit="batch"
    )
    total = 0.0
    for batch in bar:
        flat = [clip for seq in batch for clip in seq]
        audio, targets = _stack(flat)
        if recipe.data.kind == "audio":
            audio = augmenter.waveforms(audio)
        streams = audio.reshape(len(batch), per_seq * audio.shape[1], *audio.shape[2:])
        logits, _ = net(streams.to(rank.device), model.zero_state(len(batch)), hook, detach_every)
        logits = logits.reshape(len(batch), per_seq, frames_per_clip, -1)
        loss = clip_loss(logits, targets.reshape(len(batch), per_seq).to(rank.device), background, recipe.train.target)
        if not torch.isfinite(loss):  # stop here rather than ship a model of NaNs at the end
            raise DivergedError(
                f"{recipe.source}: epoch {epoch + 1}: the training loss is {loss.item()} "
                "(a lower train.lr or train.grad_clip may help)"
            )
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), recipe.train.grad_clip)
        optimizer.step()
        total += loss.item()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return total / max(1, len(batches))


def train(recipe: Recipe, resume: str | Path | None = None) -> Run | None:
    """Train, keeping every epoch's checkpoint and the best; rank 0 returns the run for release
    (deploy/release.py picks, settles, exports and checks a checkpoint), other ranks None."""
    rank = _start_distributed(recipe)
    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    torch.manual_seed(recipe.seed)
    _check_folders(recipe)
    splits: Splits = load_splits(recipe)
    labels = recipe.data.labels = splits.labels  # resolved from the data where the recipe left them out
    background = labels.index(recipe.data.background_label)
    augmenter = Augmenter(
        recipe.augment, recipe.data.sample_rate, load_noise(recipe) if recipe.data.kind == "audio" else []
    )
    model = StreamingRNN(recipe)
    _normalise(model, splits.train)
    optimizer, rates = _optimizer(model, recipe)
    out = recipe.out_dir
    start_epoch, best, stale = 0, -1.0, 0
    if resume:
        _, _, checkpoint = load_checkpoint(resume)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        start_epoch, best, stale = checkpoint["epoch"] + 1, checkpoint["best"], checkpoint["stale"]
    model.to(rank.device)
    net = nn.parallel.DistributedDataParallel(model) if rank.world > 1 else model
    if rank.main:
        out.mkdir(parents=True, exist_ok=True)
        for stale_epoch in out.glob("epoch-*.pt"):  # an earlier run's epochs past where this one starts
            if int(stale_epoch.stem.split("-")[1]) > start_epoch:
                stale_epoch.unlink()
        print(f"{recipe.name}: {splits.summary(str(Path(recipe.data.root) / recipe.data.path))}")
    for epoch in range(start_epoch, recipe.train.epochs):
        torch.manual_seed(epoch_seed(recipe.seed, epoch))
        for group, rate in zip(optimizer.param_groups, rates):
            group["lr"] = cosine_rate(rate, epoch, recipe.train.epochs)
        net.train()
        batches = _sequences(splits.train, recipe, epoch, rank)
        loss = _train_epoch(net, model, recipe, batches, optimizer, augmenter, background, epoch, rank)
        score = accuracy(model, splits.validation, background, rank.device)
        improved = score > best
        best, stale = (score, 0) if improved else (best, stale + 1)
        stop = stale >= recipe.train.early_stop
        if rank.main:
            print(
                f"epoch {epoch + 1}: loss {loss:.4f}  validation accuracy {score:.4f}{'  (best)' if improved else ''}",
                flush=True,
            )
            state = dict(epoch=epoch, score=score, best=best, stale=stale)
            save_checkpoint(out / "last.pt", model, optimizer, recipe, labels, **state)
            save_checkpoint(out / epoch_file(epoch), model, optimizer, recipe, labels, **state)
            if improved:
                save_checkpoint(out / "best.pt", model, optimizer, recipe, labels, **state)
        if rank.world > 1:
            flag = torch.tensor([int(stop)], device=rank.device)
            dist.broadcast(flag, 0)
            stop = bool(flag.item())
        if stop:
            if rank.main:
                print(f"early stop: no validation gain for {stale} epochs")
            break
    if rank.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    if not rank.main:
        return None
    return Run(recipe, splits, background, out / "best.pt", sorted(out.glob("epoch-*.pt")))


def epoch_file(epoch: int) -> str:
    """The checkpoint name of a (0-based) epoch: epoch-01.pt for the first."""
    return f"epoch-{epoch + 1:02d}.pt"


def settle(run: Run, checkpoint: Path) -> tuple[StreamingRNN, dict]:
    """Reload one of a run's checkpoints; choose its thresholds on validation clips; measure it on
    the test split. The model and the report so far."""
    model, _, state = load_checkpoint(checkpoint)
    splits, background = run.splits, run.background
    labels = splits.labels
    thresholds = choose_thresholds(model, splits.validation, labels, background, run.recipe.data.unreported, "cpu")
    test = accuracy(model, splits.test, background, "cpu") if splits.test else None
    return model, {
        "name": run.recipe.name,
        "labels": labels,
        "checkpoint": checkpoint.name,
        "validation_accuracy": state.get("score", state["best"]),  # checkpoints before `score` was kept: best's own
        "test_accuracy": test,
        "thresholds": thresholds,
        "trained_on": run.trained_on,
    }
