"""`streamrnn eval`: the workflow from a request to the printed report, and the report files.

Clips from folders or a recipe's split; a clip report (accuracy, confusion) or, with `detect`,
the clips placed in long negative audio (FRR, FA/h, DET) or the thresholds picked for a
false-accept rate (optionally written into the model's metadata).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from streamrnn.catalog import resolve_model
from streamrnn.decision import DecisionSettings
from streamrnn.evaluation import detection
from streamrnn.evaluation.clips import Item, confusion_png, evaluate_clips, folder_items, markdown, recipe_items
from streamrnn.runtime import Gate, StreamingModel


class EvalError(ValueError):
    """A request that cannot be evaluated; the message says why."""


@dataclass(frozen=True)
class EvalRequest:
    model: str  # bundled name or contract file
    data: list[str] = field(default_factory=list)  # folders with a subfolder of clips per label
    recipe: str | None = None  # or a training recipe's split
    split: str = "test"
    data_root: str | None = None
    device: str = "cpu"
    out: str | None = None  # folder for the report files
    as_json: bool = False
    detect: bool = False
    negatives: list[str] = field(default_factory=list)
    snrs: list[float | None] = field(default_factory=lambda: [None, 10.0, 0.0])  # None: clean
    pick_fa_per_hour: float | None = None
    write: str | None = None  # contract file to write picked thresholds into
    settings: DecisionSettings = DecisionSettings()
    gate: Gate | None = None  # quiet chunks skipped, as a service with the gate serves


def run_eval(request: EvalRequest) -> str:
    """Evaluate as asked; the text to print (Markdown, or one JSON object with `as_json`)."""
    if bool(request.data) == bool(request.recipe):
        raise EvalError("eval: give DATA folders or --recipe (with --split), not both or neither")
    model = StreamingModel(resolve_model(request.model), device=request.device, gate=request.gate)
    items, data = _items(request, model)
    if request.detect:
        return _detection(request, model, items, data)
    report = evaluate_clips(model, items)
    report["data"] = data
    text = markdown(report, data)
    if request.out:
        write_reports(request.out, report, text, "confusion.png", confusion_png, "report")
    return json.dumps(report) + "\n" if request.as_json else text


def write_reports(folder: str, report: dict, text: str, png: str, plot: Callable, stem: str) -> None:
    """STEM.md, STEM.json and a plot (when matplotlib is installed) into `folder`."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(text)
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    try:
        plot(report, out / png)
    except ImportError:
        print(
            f"streamrnn: no {png}: plots need matplotlib (pip install '.[plots]' in the streamrnn clone)",
            file=sys.stderr,
        )


def _items(request: EvalRequest, model: StreamingModel) -> tuple[list[Item], str]:
    """The clips to evaluate and a description of where they came from."""
    if request.recipe:
        from streamrnn.recipe.schema import load_recipe  # settings only: no torch

        recipe = load_recipe(request.recipe, request.data_root)
        items = recipe_items(recipe, request.split, model.info.sample_rate)
        test_path = request.split == "test" and recipe.data.test_path
        return items, f"{test_path or recipe.data.path} ({request.split} split of {request.recipe})"
    return folder_items(request.data, model.info.kind, model.info.sample_rate), ", ".join(request.data)


def _detection(request: EvalRequest, model: StreamingModel, items: list[Item], data: str) -> str:
    if not request.negatives:
        raise EvalError("eval --detect needs --negatives DIR (audio that never holds the keywords)")
    positives = [(i.samples, i.label) for i in items if i.label in model.info.thresholds]
    if not positives:
        raise EvalError(f"eval --detect: no clips of a reported label of {model.info.name} in {data}")
    negatives = detection.read_negatives(request.negatives, model.info.sample_rate)
    if request.pick_fa_per_hour is not None:
        return _pick_thresholds(request, request.pick_fa_per_hour, model, negatives, positives)
    report = detection.detection_report(model, negatives, positives, request.snrs, request.settings)
    report.update(data=data, negatives=request.negatives)
    text = detection.markdown(report)
    if request.out:
        write_reports(request.out, report, text, "det.png", detection.det_png, "detection")
    return json.dumps(report) + "\n" if request.as_json else text


def _pick_thresholds(request: EvalRequest, fa_per_hour: float, model: StreamingModel, negatives, positives) -> str:
    picked = detection.pick_thresholds(model, negatives, positives, fa_per_hour, request.settings)
    if request.write:
        try:
            from streamrnn.evaluation.thresholds import write_thresholds
        except ImportError:
            raise EvalError("eval --write needs onnx: pip install onnx") from None
        write_thresholds(request.write, picked["thresholds"])
        picked["written_to"] = request.write
    if request.as_json:
        return json.dumps(picked) + "\n"
    return "".join(
        f"{label}: threshold {v['threshold']}, false rejects {v['frr']}, false accepts/h {v['fa_per_hour']}"
        f" ({picked['negative_hours']:.2f} h of negatives)\n"
        for label, v in picked["per_label"].items()
    ) + "".join(f"{label}: {why}\n" for label, why in picked["skipped"].items())
