"""Training checkpoints: the model's weights, the optimizer's state, the recipe and the labels,
with what training adds (epoch, best score, thresholds, what it was trained on)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from streamrnn.recipe.schema import Recipe, recipe_from_dict
from streamrnn.training.model import StreamingRNN


def save_checkpoint(
    path: Path, model: StreamingRNN, optimizer: torch.optim.Optimizer, recipe: Recipe, labels: list[str], **extra
) -> None:
    """Write a checkpoint atomically (a reader never sees half of one)."""
    _write(
        path,
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "recipe": json.dumps(recipe.to_dict()),
            "labels": labels,
            **extra,
        },
    )


def update_checkpoint(path: Path, **fields) -> None:
    """Add or replace fields of a checkpoint (thresholds, what it was trained on)."""
    checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
    _write(path, {**checkpoint, **fields})


def _write(path: Path, checkpoint: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(checkpoint, tmp)
    tmp.replace(path)


def load_checkpoint(path: str | Path) -> tuple[StreamingRNN, Recipe, dict]:
    """Rebuild the model of a training checkpoint (loaded with weights_only=True)."""
    try:
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's weights-only unpickler raises many types on foreign files
        raise ValueError(f"{path}: not a streamrnn checkpoint ({str(exc).splitlines()[0]})") from None
    if not isinstance(checkpoint, dict) or "recipe" not in checkpoint or "model" not in checkpoint:
        raise ValueError(f"{path}: not a streamrnn checkpoint (no recipe or model weights)")
    recipe = recipe_from_dict(json.loads(checkpoint["recipe"]))
    model = StreamingRNN(recipe)
    model.load_state_dict(checkpoint["model"])
    return model, recipe, checkpoint
