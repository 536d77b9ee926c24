"""From a recipe to a shipped contract file: train, export the best checkpoint, pick thresholds
for the recipe's false-accept rate on the exported model, check parity with PyTorch, and write
the run's report.json. Release depends on training, never the other way round."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from streamrnn.deploy.export import export_model
from streamrnn.deploy.metadata import write_thresholds
from streamrnn.deploy.verify import parity
from streamrnn.evaluation.datasets import data_path
from streamrnn.evaluation.detection import pick_thresholds, read_negatives
from streamrnn.runtime import StreamingModel
from streamrnn.training.checkpoint import update_checkpoint
from streamrnn.training.recipe import Recipe
from streamrnn.training.train import Trained, train


def train_and_release(recipe: Recipe, resume: str | Path | None = None) -> Path | None:
    """`streamrnn train`: the contract file's path (None on the other ranks of a torchrun)."""
    trained = train(recipe, resume)
    return release(trained) if trained else None


def release(trained: Trained) -> Path:
    """Export a trained run, pick its false-accept thresholds, check parity, write report.json."""
    recipe, report = trained.recipe, dict(trained.report)
    out = trained.checkpoint.parent
    path = export_model(
        trained.model, recipe, report["labels"], out / f"{recipe.name}.onnx", report["thresholds"], report["trained_on"]
    )
    if recipe.train.target_fa_per_hour:
        report["picked"] = _pick_for_fa_rate(path, trained)
        report["thresholds"] = report["picked"]["thresholds"]
        update_checkpoint(trained.checkpoint, thresholds=report["thresholds"])
    held_out = [x.samples.numpy() for x in (trained.splits.test or trained.splits.validation)[:3]]
    gaps = parity(trained.model, path, np.concatenate(held_out), [held_out[-1], held_out[0]])
    report["parity_max_abs"] = gaps
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    test = report["test_accuracy"]
    print(
        f"validation accuracy {report['validation_accuracy']:.4f}; test accuracy "
        f"{'n/a' if test is None else f'{test:.4f}'}; exported {path}; parity (max |diff| vs "
        f"whole-signal PyTorch) " + ", ".join(f"{k} {v:.1e}" for k, v in gaps.items())
    )
    return path


def _pick_for_fa_rate(path: Path, trained: Trained) -> dict:
    """Thresholds for `train.target_fa_per_hour` false accepts per hour, chosen with the exported
    model: the validation split's other clips placed into the `train.validation_negatives`
    recordings (or, without them, into the validation background clips joined into one stream);
    written into the contract file's metadata."""
    recipe, splits, background = trained.recipe, trained.splits, trained.background
    fa_per_hour = recipe.train.target_fa_per_hour
    folders = [str(data_path(recipe.data.root, f)) for f in recipe.train.validation_negatives]
    negatives = (
        read_negatives(folders, recipe.data.sample_rate)
        if folders
        else [np.concatenate([x.samples.numpy() for x in splits.validation if x.label == background])]
    )
    positives = [(x.samples.numpy(), splits.labels[x.label]) for x in splits.validation if x.label != background]
    picked = pick_thresholds(StreamingModel(path), negatives, positives, fa_per_hour)
    write_thresholds(path, picked["thresholds"])
    print(
        f"thresholds for {fa_per_hour} false accepts/h on {picked['negative_hours']:.2f} h of validation "
        f"audio: "
        + ", ".join(f"{k} {v['threshold']} (false rejects {v['frr']})" for k, v in picked["per_label"].items())
    )
    return picked
