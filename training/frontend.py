"""Front ends inside the model graph: log-mel from raw PCM, and normalisation of frames.

The log-mel front end is a fixed DFT as a strided Conv1d (exports cleanly to ONNX and runs fast)
followed by torchaudio's mel filterbank. Its streaming state is the last `window - hop` samples,
so chunk-by-chunk output equals whole-signal output exactly.
"""

from __future__ import annotations

import math

import torch
import torchaudio
from torch import nn


class LogMel(nn.Module):
    def __init__(self, sample_rate: int, window: int, hop: int, n_mels: int,
                 f_min: float = 20.0, f_max: float | None = None):
        super().__init__()
        if window < hop:
            raise ValueError(f"window ({window}) must be at least the hop ({hop})")
        self.hop = hop
        self.window = window
        self.context = window - hop
        n_fft = 1 << (window - 1).bit_length()
        n_bins = n_fft // 2 + 1
        n = torch.arange(window, dtype=torch.float64)
        k = torch.arange(n_bins, dtype=torch.float64)[:, None]
        hann = torch.hann_window(window, periodic=True, dtype=torch.float64)
        angle = 2 * math.pi * k * n / n_fft
        kernel = torch.cat([torch.cos(angle) * hann, -torch.sin(angle) * hann])
        self.register_buffer("dft", kernel[:, None, :].float(), persistent=False)
        mel = torchaudio.functional.melscale_fbanks(
            n_bins, f_min, f_max or sample_rate / 2, n_mels, sample_rate, norm="slaney",
            mel_scale="slaney")
        self.register_buffer("mel", mel.float(), persistent=False)
        self.n_bins = n_bins

    def zero_state(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, self.context)

    def forward(self, audio: torch.Tensor, state: torch.Tensor):
        """audio [B, N] (N a multiple of hop), state [B, window-hop] -> ([B, N/hop, mels], state)."""
        x = torch.cat([state, audio], dim=1)
        spec = nn.functional.conv1d(x[:, None, :], self.dft, stride=self.hop)
        power = spec[:, :self.n_bins] ** 2 + spec[:, self.n_bins:] ** 2
        feats = torch.log(torch.matmul(power.transpose(1, 2), self.mel) + 1e-6)
        return feats, x[:, x.shape[1] - self.context:]


class Normalize(nn.Module):
    """(x - mean) / std per feature, with statistics measured on training data and kept in the graph."""

    def __init__(self, size: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("std", torch.ones(size))

    def set_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean.copy_(mean)
        self.std.copy_(std.clamp_min(1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std
