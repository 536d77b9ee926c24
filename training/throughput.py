"""Training throughput for `streamrnn bench`: clips per second through a training step."""

from __future__ import annotations

import time
from importlib.resources import files

import torch

from streamrnn.recipe.schema import load_recipe

from .model import StreamingRNN
from .train import clip_loss


def clips_per_second(repeats: int) -> tuple[list[float], int]:
    """Training clips per second on this CPU for the `commands` recipe (forward, backward and
    optimizer step on 1-s clips in streams of 3; augmentation not included): one number per run
    after a warm-up, and torch's thread count."""
    recipe = load_recipe(str(files("streamrnn.training.recipes").joinpath("commands.toml")))
    recipe.data.labels = recipe.data.labels or ["a", "b"]
    model = StreamingRNN(recipe)
    optimizer = torch.optim.AdamW(model.parameters())
    batch, per_seq = recipe.train.batch_size, recipe.train.clips_per_sequence
    audio = torch.randn(batch, per_seq * recipe.clip_samples) * 0.1
    labels = torch.randint(len(recipe.data.labels), (batch, per_seq))
    frames = recipe.clip_samples // model.frame_hop
    runs = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        logits, _ = model(audio, model.zero_state(batch), None, frames)
        loss = clip_loss(logits.reshape(batch, per_seq, frames, -1), labels, 0, "clip")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        runs.append(batch * per_seq / (time.perf_counter() - start))
    return runs[1:], torch.get_num_threads()
