"""Parity of a model and its contract file: the same per-frame scores however a signal is cut.

Four ways through one signal: (a) PyTorch over the whole signal, (b) PyTorch chunk by chunk,
(c) onnxruntime chunk by chunk, (d) onnxruntime with the stream batched among other streams of
different content and start times, fed in irregular pieces.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from streamrnn.runtime import StreamingModel
from streamrnn.training.model import StreamingRNN

IRREGULAR_PIECES = (1, 37, None, 5, 1000)  # None: three chunks at once
TOLERANCE = 1e-4  # the largest score difference a released file may show


class ParityError(ValueError):
    """An exported file whose scores are not its PyTorch model's."""


def pad_to_chunks(audio: np.ndarray, chunk: int) -> np.ndarray:
    extra = -len(audio) % chunk
    return np.concatenate([audio, np.zeros((extra, *audio.shape[1:]), np.float32)]) if extra else audio


@torch.no_grad()
def torch_scores(model: StreamingRNN, audio: np.ndarray, chunk: int | None = None) -> np.ndarray:
    """Per-frame probabilities [frames, labels] from PyTorch, in one call or chunk by chunk."""
    model.eval()
    x = torch.from_numpy(audio)[None]
    state = model.zero_state(1)
    step = chunk or x.shape[1]
    parts = []
    for start in range(0, x.shape[1], step):
        logits, state = model(x[:, start : start + step], state)
        parts.append(torch.softmax(logits, -1)[0])
    return torch.cat(parts).numpy()


def batched_scores(
    runtime: StreamingModel, audio: np.ndarray, others: list[np.ndarray], pieces=IRREGULAR_PIECES
) -> np.ndarray:
    """Scores of `audio` served among `others`, which start earlier, in irregular pieces."""
    chunk = runtime.chunk
    sizes = [p or 3 * chunk for p in pieces]
    streams = {f"other{i}": x for i, x in enumerate(others)} | {"target": audio}
    offsets = dict.fromkeys(streams, 0)
    collected: list[np.ndarray] = []
    turn = 0
    while any(offsets[s] < len(x) for s, x in streams.items()):
        for i, (sid, x) in enumerate(streams.items()):
            if sid not in runtime.streams:
                if sid == "target" and turn < 2:
                    continue  # the target joins after the others have run a while
                runtime.add_stream(sid)
            n = sizes[(turn + i) % len(sizes)]
            runtime.feed(sid, x[offsets[sid] : offsets[sid] + n])
            offsets[sid] += n
        turn += 1
        out = runtime.step()
        if "target" in out:
            collected.append(out["target"])
    runtime.flush("target")
    collected += [runtime.run().get("target", np.zeros((0, len(runtime.info.labels)), np.float32))]
    for sid in streams:
        runtime.remove_stream(sid)
    return np.concatenate(collected)


def parity(model: StreamingRNN, path: str | Path, audio: np.ndarray, others: list[np.ndarray]) -> dict[str, float]:
    """Largest absolute score difference of (b), (c), (d) against (a) over one signal."""
    runtime = StreamingModel(path)
    chunk = runtime.chunk
    audio = pad_to_chunks(audio, chunk)
    whole = torch_scores(model, audio)
    return {
        "torch_chunks": float(np.abs(torch_scores(model, audio, chunk) - whole).max()),
        "onnx_chunks": float(np.abs(runtime.score([audio])[0] - whole).max()),
        "onnx_batched": float(np.abs(batched_scores(runtime, audio, others) - whole).max()),
    }


def describe(gaps: dict[str, float]) -> str:
    """parity()'s gaps as one line: `torch_chunks 1.2e-07, ...`."""
    return ", ".join(f"{k} {v:.1e}" for k, v in gaps.items())


def check_parity(gaps: dict[str, float], path: str | Path) -> None:
    """Raise ParityError naming `path` where a gap of parity() is over TOLERANCE or not a number."""
    if not all(gap < TOLERANCE for gap in gaps.values()):  # NaN fails the comparison too
        raise ParityError(
            f"{path}: its scores differ from the PyTorch model's ({describe(gaps)}; tolerance {TOLERANCE:.0e})"
        )
