"""Front ends inside the model graph: log-mel from raw PCM, a learned filterbank, normalisation of
frames, and a causal convolution over the last few frames.

The log-mel front end computes each frame's power spectrum with a two-stage DFT written as
matrix products (so it exports to plain ONNX MatMul and Gather, no complex numbers): an n_fft-point
DFT split as P x Q with Q = gcd(hop, n_fft). Stage 1 takes P-point DFTs across each frame's rows
of Q samples (hop is a whole number of rows, so frames are gathered rows), stage 2 combines them
with the twiddle factors folded in, and torchaudio's mel filterbank follows. That is about a
quarter of the multiply-adds of a direct DFT (for a 400-sample window in 512 points: 51k instead
of 205k per frame). Its streaming state is the last `window - hop` samples, so chunk-by-chunk
output equals whole-signal output exactly.
"""

from __future__ import annotations

import math

import torch
import torchaudio
from torch import nn


class LogMel(nn.Module):
    hann: torch.Tensor  # buffers, typed for the type checker
    stage1: torch.Tensor
    stage2: torch.Tensor
    mel: torch.Tensor

    def __init__(
        self, sample_rate: int, window: int, hop: int, n_mels: int, f_min: float = 20.0, f_max: float | None = None
    ):
        super().__init__()
        if window < hop:
            raise ValueError(f"window ({window}) must be at least the hop ({hop})")
        self.hop = hop
        self.window = window
        self.context = window - hop
        n_fft = 1 << (window - 1).bit_length()
        q = math.gcd(hop, n_fft)  # samples per row; a frame is p rows, the hop hop/q rows
        p = n_fft // q
        k2_count = n_fft // 2 // p + 1  # bins k = k1 + p * k2 up to n_fft / 2
        self.p, self.q, self.k2_count, self.pad = p, q, k2_count, n_fft - window
        f64 = torch.float64
        hann = torch.zeros(n_fft, dtype=f64)
        hann[self.pad :] = torch.hann_window(window, periodic=True, dtype=f64)  # zeros first: see forward
        self.register_buffer("hann", hann.reshape(p, q).float(), persistent=False)  # [n1, n2]
        n1 = k1 = torch.arange(p, dtype=f64)
        phi = 2 * math.pi * k1[:, None] * n1[None, :] / p
        self.register_buffer(
            "stage1", torch.cat([torch.cos(phi), -torch.sin(phi)]).float(), persistent=False
        )  # [(re|im, k1), n1]
        n2, k2 = torch.arange(q, dtype=f64), torch.arange(k2_count, dtype=f64)
        theta = 2 * math.pi * n2[None, :, None] * (k1[:, None, None] + p * k2[None, None, :]) / n_fft
        cos, sin = torch.cos(theta), torch.sin(theta)  # [k1, n2, k2]
        # (a + ib) e^(-i theta) summed over n2: real a cos + b sin, imaginary b cos - a sin
        stage2 = torch.cat([torch.cat([cos, -sin], 2), torch.cat([sin, cos], 2)], 1)
        self.register_buffer("stage2", stage2.float(), persistent=False)  # [k1, (re|im, n2), (re|im, k2)]
        n_bins = n_fft // 2 + 1
        mel = torchaudio.functional.melscale_fbanks(
            n_bins, f_min, f_max or sample_rate / 2, n_mels, sample_rate, norm="slaney", mel_scale="slaney"
        )
        bins = (k1[:, None] + p * k2[None, :]).long()  # [k1, k2] -> bin
        inside = bins < n_bins
        mel_by_k = torch.zeros(p, k2_count, n_mels)
        mel_by_k[inside] = mel[bins[inside]].float()
        self.register_buffer("mel", mel_by_k.reshape(p * k2_count, n_mels), persistent=False)

    def zero_state(self, batch: int) -> list[torch.Tensor]:
        return [torch.zeros(batch, self.context)]

    def forward(self, audio: torch.Tensor, state: list[torch.Tensor]):
        """audio [B, N] (N a multiple of hop), state [[B, window-hop]] -> ([B, N/hop, mels], [state])."""
        x = torch.cat([state[0], audio], dim=1)
        batch = x.shape[0]
        # n_fft - window leading zeros: each n_fft-sample frame then ends where its window ends,
        # and its first samples carry zero weight (the power spectrum ignores the shift)
        rows = nn.functional.pad(x, (self.pad, 0)).reshape(batch, -1, self.q)
        step = self.hop // self.q
        frames = (rows.shape[1] - self.p) // step + 1
        index = torch.arange(frames)[:, None] * step + torch.arange(self.p)[None, :]
        y = torch.matmul(self.stage1, rows[:, index] * self.hann)  # [B, T, (re|im, k1), n2]
        y = y.reshape(-1, 2, self.p, self.q).permute(2, 0, 1, 3).reshape(self.p, -1, 2 * self.q)
        z = torch.matmul(y, self.stage2)  # [k1, B*T, (re|im, k2)]
        power = z[..., : self.k2_count] ** 2 + z[..., self.k2_count :] ** 2
        mel = torch.matmul(power.transpose(0, 1).reshape(-1, self.p * self.k2_count), self.mel)
        feats = torch.log(mel.reshape(batch, frames, -1) + 1e-6)
        return feats, [x[:, x.shape[1] - self.context :]]


class FilterBank(nn.Module):
    """Log band energies from one strided convolution: each band a complex filter (a real and an
    imaginary row) over the frame's `window` samples, its output squared and summed, then the log.
    Initialised as Gabor filters on the mel scale (the centre of each mel band, a Gaussian
    envelope as wide in frequency as the band, at most the window); the rows are learned. In the
    graph it is a Conv, a Mul, a ReduceSum and a Log: a few operators instead of the log-mel's
    DFT stages. Its streaming state is the last `window - hop` samples, as LogMel's."""

    def __init__(self, sample_rate: int, window: int, hop: int, bands: int, f_min: float = 20.0):
        super().__init__()
        if window < hop:
            raise ValueError(f"window ({window}) must be at least the hop ({hop})")
        self.hop, self.window, self.context, self.bands = hop, window, window - hop, bands
        f64 = torch.float64
        top = 2595 * math.log10(1 + sample_rate / 2 / 700)  # the mel scale (HTK), f_min to Nyquist
        bottom = 2595 * math.log10(1 + f_min / 700)
        points = 700 * (10 ** (torch.linspace(bottom, top, bands + 2, dtype=f64) / 2595) - 1)
        centre, width = points[1:-1], (points[2:] - points[:-2]) / 2  # Hz: each band's centre and half-power width
        sigma = (2.355 / (2 * math.pi * width) * sample_rate).clamp(max=window / 6)  # envelope std in samples
        t = torch.arange(window, dtype=f64) - (window - 1) / 2
        envelope = torch.exp(-0.5 * (t[None] / sigma[:, None]) ** 2)
        envelope = envelope / envelope.norm(dim=1, keepdim=True)
        phase = 2 * math.pi * centre[:, None] * t[None] / sample_rate
        rows = torch.stack([envelope * torch.cos(phase), envelope * torch.sin(phase)], 1)  # [bands, re|im, window]
        self.filters = nn.Parameter(rows.reshape(2 * bands, 1, window).float())

    def zero_state(self, batch: int) -> list[torch.Tensor]:
        return [torch.zeros(batch, self.context)]

    def forward(self, audio: torch.Tensor, state: list[torch.Tensor]):
        """audio [B, N] (N a multiple of hop), state [[B, window-hop]] -> ([B, N/hop, bands], [state])."""
        x = torch.cat([state[0], audio], dim=1)
        y = nn.functional.conv1d(x[:, None], self.filters, stride=self.hop)  # [B, (band, re|im), T]
        power = (y * y).reshape(x.shape[0], self.bands, 2, -1).sum(2)
        feats = torch.log(power + 1e-6).transpose(1, 2)
        return feats, [x[:, x.shape[1] - self.context :]]


class Normalize(nn.Module):
    """(x - mean) / std per feature, with statistics measured on training data and kept in the graph."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, size: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("std", torch.ones(size))

    def set_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean.copy_(mean)
        self.std.copy_(std.clamp_min(1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class FrameContext(nn.Module):
    """A causal convolution over the last `frames` frames, then ReLU: each output frame sees the
    frames up to its own and none after. Its streaming state is the previous frames - 1 frames."""

    def __init__(self, features: int, channels: int, frames: int):
        super().__init__()
        self.features, self.past = features, frames - 1
        self.conv = nn.Conv1d(features, channels, frames)

    def zero_state(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, self.past, self.features)

    def forward(self, feats: torch.Tensor, state: torch.Tensor):
        """feats [B, T, F], state [B, frames-1, F] -> ([B, T, channels], state)."""
        x = torch.cat([state, feats], dim=1)
        y = torch.relu(self.conv(x.transpose(1, 2))).transpose(1, 2)
        return y, x[:, x.shape[1] - self.past :]
