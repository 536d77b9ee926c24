"""From a recipe to a shipped contract file: train, settle and export the best checkpoint (its
thresholds chosen on validation clips), pick thresholds for the recipe's false-accept rate on
the exported model, write the run's report.json and check parity (a file whose scores are not
the model's is an error). With a false-accept rate, the checkpoint shipped is the epoch that
misses fewest validation positives at that rate, not the one with the best clip accuracy.
Release depends on training, never the other way round."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from streamrnn.deploy.export import export_model
from streamrnn.deploy.verify import check_parity, describe, parity
from streamrnn.evaluation.detection import Negatives, pick_thresholds, read_negatives
from streamrnn.recipe.datasets import data_path
from streamrnn.recipe.schema import Recipe
from streamrnn.runtime import StreamingModel
from streamrnn.training.checkpoint import load_checkpoint, update_checkpoint
from streamrnn.training.train import Run, settle, train


def train_and_release(recipe: Recipe, resume: str | Path | None = None) -> Path | None:
    """`streamrnn train`: the contract file's path (None on the other ranks of a torchrun)."""
    run = train(recipe, resume)
    return release(run) if run else None


def release(run: Run) -> Path:
    """Settle and export a run's checkpoint (with a false-accept rate: the epoch that misses
    fewest validation positives at it, with the thresholds for it; else the best by validation
    accuracy), write report.json, check parity."""
    recipe = run.recipe
    checkpoint, picked = _pick_epoch(run) if recipe.train.target_fa_per_hour else (run.best, None)
    model, report = settle(run, checkpoint)
    if picked:
        report["picked"], report["thresholds"] = picked, {**report["thresholds"], **picked["thresholds"]}
    update_checkpoint(checkpoint, thresholds=report["thresholds"], trained_on=report["trained_on"])
    path = export_model(
        model,
        recipe,
        report["labels"],
        checkpoint.parent / f"{recipe.name}.onnx",
        report["thresholds"],
        report["trained_on"],
    )
    held_out = [x.samples.numpy() for x in (run.splits.test or run.splits.validation)[:3]]
    gaps = parity(model, path, np.concatenate(held_out), [held_out[-1], held_out[0]])
    report["parity_max_abs"] = gaps
    (checkpoint.parent / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    test = report["test_accuracy"]
    print(
        f"{report['checkpoint']}: validation accuracy {report['validation_accuracy']:.4f}; test accuracy "
        f"{'n/a' if test is None else f'{test:.4f}'}; exported {path}; parity (max |diff| vs "
        f"whole-signal PyTorch) {describe(gaps)}"
    )
    check_parity(gaps, path)
    return path


def _pick_epoch(run: Run) -> tuple[Path, dict]:
    """Each epoch's checkpoint exported and given thresholds for `train.target_fa_per_hour`
    (see _validation_streams); the one with the lowest mean false-reject rate at them wins (ties:
    the higher validation accuracy, then the later epoch). Returns it with its pick, which lists
    every epoch's."""
    recipe, labels = run.recipe, run.splits.labels
    negatives, positives = _validation_streams(run)
    rate = recipe.train.target_fa_per_hour
    placeholder = dict.fromkeys(recipe.reported(labels), 0.5)  # picked afresh where there are positives
    scans = []
    with tempfile.TemporaryDirectory() as tmp:
        for index, checkpoint in enumerate(run.epochs):
            model, _, state = load_checkpoint(checkpoint)
            candidate = export_model(
                model, recipe, labels, Path(tmp) / checkpoint.with_suffix(".onnx").name, placeholder, run.trained_on
            )
            picked = pick_thresholds(StreamingModel(candidate), negatives, positives, rate)
            frr = float(np.mean([v["frr"] for v in picked["per_label"].values()]))
            scans.append(((frr, -state["score"], -index), checkpoint, state["score"], picked))
            print(
                f"{checkpoint.name}: validation accuracy {state['score']:.4f}; at {rate} false accepts/h "
                f"on {picked['negative_hours']:.2f} h of validation audio it misses {frr:.4f} of "
                f"{picked['positives']} positives"
            )
    _, checkpoint, _, picked = min(scans, key=lambda scan: scan[0])
    picked["epochs"] = [
        {"checkpoint": c.name, "validation_accuracy": score, "frr": {k: v["frr"] for k, v in p["per_label"].items()}}
        for _, c, score, p in scans
    ]
    print(
        f"shipped {checkpoint.name}: thresholds "
        + ", ".join(f"{k} {v['threshold']} (false rejects {v['frr']})" for k, v in picked["per_label"].items())
    )
    return checkpoint, picked


def _validation_streams(run: Run) -> tuple[Negatives, list[tuple[np.ndarray, str]]]:
    """The `train.validation_negatives` recordings (or, without them, the validation background
    clips joined into one stream) and the validation split's other clips, to be placed in them."""
    recipe, splits, background = run.recipe, run.splits, run.background
    folders = [str(data_path(recipe.data.root, f)) for f in recipe.train.validation_negatives]
    rate = recipe.data.sample_rate
    negatives = (
        read_negatives(folders, rate)
        if folders
        else Negatives(
            [np.concatenate([x.samples.numpy() for x in splits.validation if x.label == background])],
            ["validation background clips"],
            rate,
        )
    )
    positives = [(x.samples.numpy(), splits.labels[x.label]) for x in splits.validation if x.label != background]
    return negatives, positives
