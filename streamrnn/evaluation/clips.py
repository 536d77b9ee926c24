"""`streamrnn eval`: a contract file's quality on labelled clips, through the streaming runtime.

Clips come from folders per label (the Speech Commands layout included) or from a training
recipe's held-out split (the same speakers training kept out). Every clip is a stream from zero
state, all clips batched; a clip shorter than the model's training clips is centred in silence of
their length (whole frames), as training saw it (so a short word is followed by the silence the model had to
judge it in), and the tail of each is padded to a whole chunk; a clip's label follows from its
frames by the model's readout (metrics.clip_scores). Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamrnn.audio import AudioError, read_audio
from streamrnn.evaluation.metrics import clip_report, clip_scores, confusion
from streamrnn.recipe.datasets import DataError, list_clips, recipe_clips, recipe_split, sensor_recordings
from streamrnn.recipe.schema import whole_frames
from streamrnn.runtime import StreamingModel


@dataclass
class Item:
    name: str
    label: str
    samples: np.ndarray  # at the model's rate: [n] audio or [n, channels] sensor


def _audio_items(clips, rate: float) -> list[Item]:
    items = []
    for clip in clips:
        try:
            items.append(Item(str(clip.path), clip.label, read_audio(clip.path, rate)))
        except AudioError as exc:
            raise DataError(str(exc)) from None
    return items


def folder_items(folders: list[str], kind: str, rate: float) -> list[Item]:
    """Every clip of each folder-per-label dataset: audio files, or for sensor models CSV
    recordings (`_background_noise_` skipped)."""
    items = []
    for folder in folders:
        if kind == "sensor":
            _, recordings = sensor_recordings(Path(folder), "csv")
            items += [Item(group, label, samples) for samples, label, group in recordings]
        else:
            items += _audio_items(list_clips(Path(folder), "folders")[1], rate)
    return items


def recipe_items(recipe, split: str, rate: float) -> list[Item]:
    """The clips of a recipe's split (train, validation, test or all), as training draws it."""
    d = recipe.data
    path = d.test_path if split == "test" and d.test_path else d.path
    whole = split == "all" or path != d.path  # a separate test set is all test

    def wanted(group: str, train_only: bool = False) -> bool:
        return whole or recipe_split(group, d, train_only) == split

    if d.kind == "sensor":
        _, recordings = sensor_recordings(Path(d.root) / path, d.layout, d.labels)
        return [Item(group, label, samples) for samples, label, group in recordings if wanted(group)]
    _, clips = recipe_clips(d, path, with_train_only=split in ("train", "all"))
    return _audio_items([c for c in clips if wanted(c.group, c.train_only)], rate)


def centred(samples: np.ndarray, length: int) -> np.ndarray:
    """A clip shorter than `length` samples padded with silence evenly on both sides; else as it is."""
    short = max(0, length - len(samples))
    return np.pad(samples, [(short // 2, short - short // 2)] + [(0, 0)] * (samples.ndim - 1)) if short else samples


def evaluate_clips(model: StreamingModel, items: list[Item]) -> dict:
    """Clip accuracy, per-label precision/recall and the confusion matrix."""
    info = model.info
    unknown = sorted({i.label for i in items} - set(info.labels))
    if unknown:
        raise DataError(f"labels {', '.join(unknown)} are not labels of model {info.name} ({', '.join(info.labels)})")
    if not items:
        raise DataError("no clips to evaluate")
    length = whole_frames(info.clip_seconds, info.sample_rate, info.frame_hop)  # where training placed them
    scores = model.score([centred(item.samples, length) for item in items])
    background = info.labels.index(info.background_label)
    predicted = np.array([int(np.argmax(clip_scores(s, background, info.readout))) for s in scores])
    truth = np.array([info.labels.index(i.label) for i in items])
    report = clip_report(list(info.labels), confusion(truth, predicted, len(info.labels)))
    report["model"], report["model_version"] = info.name, info.version
    report["errors"] = [
        {"clip": items[n].name, "label": items[n].label, "predicted": info.labels[predicted[n]]}
        for n in np.flatnonzero(predicted != truth)
    ]
    return report


def markdown(report: dict, data: str) -> str:
    """The report as Markdown: summary, per-label table, confusion matrix."""
    labels = [x for x in report["confusion"]["labels"] if x in report["per_label"]]
    index = {x: i for i, x in enumerate(report["confusion"]["labels"])}
    matrix = report["confusion"]["matrix"]
    lines = [
        f"# {report['model']} {report['model_version']} on {data}",
        "",
        f"{report['clips']} clips, accuracy **{report['accuracy']:.4f}**",
        "",
        "| label | precision | recall | clips |",
        "|---|---|---|---|",
    ]
    for x in labels:
        p = report["per_label"][x]
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        lines.append(f"| {x} | {fmt(p['precision'])} | {fmt(p['recall'])} | {p['support']} |")
    lines += [
        "",
        "Confusion (rows: true label, columns: predicted):",
        "",
        "| | " + " | ".join(labels) + " |",
        "|---" * (len(labels) + 1) + "|",
    ]
    for x in labels:
        lines.append(f"| **{x}** | " + " | ".join(str(matrix[index[x]][index[y]]) for y in labels) + " |")
    return "\n".join(lines) + "\n"


def confusion_png(report: dict, path: Path) -> None:
    """The confusion matrix as a PNG (needs matplotlib: pip install '.[plots]' in the streamrnn clone)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [x for x in report["confusion"]["labels"] if x in report["per_label"]]
    index = [report["confusion"]["labels"].index(x) for x in labels]
    matrix = np.array(report["confusion"]["matrix"])[np.ix_(index, index)]
    fig, ax = plt.subplots(figsize=(max(5.5, 1.2 + 0.55 * len(labels)), max(4.5, 1 + 0.5 * len(labels))))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i in range(len(labels)):
        for j in range(len(labels)):
            if matrix[i, j]:
                ax.text(
                    j,
                    i,
                    str(matrix[i, j]),
                    ha="center",
                    va="center",
                    color="white" if matrix[i, j] > matrix.max() / 2 else "black",
                    fontsize=8,
                )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(
        f"{report['model']} {report['model_version']}: accuracy {report['accuracy']:.3f} ({report['clips']} clips)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
