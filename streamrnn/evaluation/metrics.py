"""Quality measures in numpy (no torch), used by `streamrnn eval`."""

from __future__ import annotations

import numpy as np


def clip_scores(scores: np.ndarray, background: int, readout: str) -> np.ndarray:
    """A clip's log-score per label from its per-frame probabilities [frames, labels].

    `peak`: the highest log-probability of each label over the frames, and for the background
    label the lowest ("nothing anywhere"); `mean`: the mean log-probability over the frames.
    (The training loss uses the same readout: streamrnn.training.train.clip_log_scores.)
    """
    logp = np.log(np.clip(scores, 1e-12, None))
    if readout == "mean":
        return logp.mean(axis=0)
    out = logp.max(axis=0)
    out[background] = logp[:, background].min()
    return out


def confusion(truth: np.ndarray, predicted: np.ndarray, n: int) -> np.ndarray:
    """matrix[true, predicted] counts."""
    matrix = np.zeros((n, n), np.int64)
    np.add.at(matrix, (truth, predicted), 1)
    return matrix


def clip_report(labels: list[str], matrix: np.ndarray) -> dict:
    """Accuracy, per-label precision/recall/support, and the confusion matrix."""
    total = matrix.sum()
    per_label = {}
    for i, label in enumerate(labels):
        support, predicted, right = int(matrix[i].sum()), int(matrix[:, i].sum()), int(matrix[i, i])
        if support or predicted:
            per_label[label] = {
                "precision": round(right / predicted, 4) if predicted else None,
                "recall": round(right / support, 4) if support else None,
                "support": support,
            }
    return {
        "clips": int(total),
        "accuracy": round(float(np.trace(matrix) / total), 4) if total else None,
        "per_label": per_label,
        "confusion": {"labels": labels, "matrix": matrix.tolist()},
    }
