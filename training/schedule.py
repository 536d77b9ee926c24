"""The per-epoch schedule both training loops (train, distill) share: data order, random seed and
learning rate are functions of the recipe's seed and the epoch, so a resumed run continues exactly."""

from __future__ import annotations

import math

import torch


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's random draws (data order, augmentation)."""
    return seed * 7919 + epoch


def epoch_order(count: int, seed: int, epoch: int) -> torch.Tensor:
    """One epoch's order of `count` training items."""
    return torch.randperm(count, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))


def cosine_rate(rate: float, epoch: int, epochs: int) -> float:
    """The learning rate of an epoch on a cosine schedule from `rate` down towards 0."""
    return rate * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
