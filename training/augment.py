"""Training-time augmentation with torchaudio, on batches of waveforms and of features.

Draws from torch's global generator, which the trainer seeds per epoch, so a run reproduces.
"""

from __future__ import annotations

import math

import torch
import torchaudio.functional as AF
import torchaudio.transforms as AT

from streamrnn.recipe.schema import AugmentConfig


def _fit_length(x: torch.Tensor, length: int) -> torch.Tensor:
    """Centre-cut or zero-pad the last axis to `length`."""
    n = x.shape[-1]
    if n >= length:
        start = (n - length) // 2
        return x[..., start : start + length]
    left = (length - n) // 2
    return torch.nn.functional.pad(x, (left, length - n - left))


def _row_mask(batch: int, p: float) -> torch.Tensor:
    return torch.rand(batch) < p


class Augmenter:
    def __init__(self, cfg: AugmentConfig, sample_rate: int, noise: list[torch.Tensor]):
        self.cfg = cfg
        self.rate = sample_rate
        self.noise = [n for n in noise if len(n) > 0]
        self.freq_mask = AT.FrequencyMasking(cfg.freq_mask_width, iid_masks=True)
        self.time_mask = AT.TimeMasking(cfg.time_mask_width, iid_masks=True)

    def waveforms(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, N] clips -> augmented clips of the same shape."""
        c, (batch, length) = self.cfg, x.shape
        if c.speed_prob and torch.rand(()) < c.speed_prob:
            factor = 1 + (2 * torch.rand(()).item() - 1) * c.speed_range
            x = _fit_length(AF.resample(x, round(100 * factor), 100), length)
        if c.pitch_prob and torch.rand(()) < c.pitch_prob:
            steps = int(torch.randint(1, int(c.pitch_semitones) + 1, ())) * (1 if torch.rand(()) < 0.5 else -1)
            x = AF.pitch_shift(x, self.rate, steps)[..., :length]
        if c.shift_seconds:
            limit = int(c.shift_seconds * self.rate)
            shift = torch.randint(-limit, limit + 1, (batch, 1))
            index = torch.arange(length)[None, :] - shift
            valid = (index >= 0) & (index < length)
            x = x.gather(1, index.clamp(0, length - 1)) * valid
        if c.reverb_prob:
            rows = _row_mask(batch, c.reverb_prob)
            if rows.any():
                x = x.clone()
                x[rows] = self._reverb(x[rows])
        if c.noise_prob and self.noise:
            rows = _row_mask(batch, c.noise_prob).nonzero()[:, 0]
            if len(rows):
                snr = c.snr_min + torch.rand(len(rows)) * (c.snr_max - c.snr_min)
                cuts = self._noise_cuts(len(rows), length)
                audible = cuts.pow(2).mean(1) > 1e-10  # a silent cut (a pause in music) has no level to scale
                mixed = rows[audible]
                x = x.clone()
                x[mixed] = AF.add_noise(x[mixed], cuts[audible], snr[audible])
        if c.gain_db:
            gain_db = (2 * torch.rand(batch, 1) - 1) * c.gain_db
            x = x * 10 ** (gain_db / 20)
        return x.clamp(-1, 1)

    def features(self, feats: torch.Tensor) -> torch.Tensor:
        """SpecAugment: masks on normalised frames [B, T, F] (masked to 0, the mean)."""
        spec = feats.transpose(1, 2)
        for _ in range(self.cfg.freq_masks):
            spec = self.freq_mask(spec)
        for _ in range(self.cfg.time_masks):
            spec = self.time_mask(spec)
        return spec.transpose(1, 2)

    def _noise_cuts(self, count: int, length: int) -> torch.Tensor:
        cuts = []
        for _ in range(count):
            noise = self.noise[int(torch.randint(len(self.noise), ()))]
            if len(noise) <= length:
                noise = noise.repeat(math.ceil(length / len(noise)) + 1)
            start = int(torch.randint(len(noise) - length, ()))
            cuts.append(noise[start : start + length])
        return torch.stack(cuts)

    def _reverb(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve with generated room impulse responses (direct path + exponential tail)."""
        batch, length = x.shape
        taps = max(2, int(self.cfg.rt60_max * self.rate))
        rt60 = 0.1 + torch.rand(batch, 1) * max(self.cfg.rt60_max - 0.1, 0.0)
        t = torch.arange(taps)[None, :] / self.rate
        rir = torch.randn(batch, taps) * torch.exp(-6.9 * t / rt60) * 0.3
        rir[:, 0] = 1.0
        rir = rir / rir.norm(dim=1, keepdim=True)
        wet = AF.fftconvolve(x, rir)[:, :length]
        scale = x.pow(2).mean(1, keepdim=True).sqrt() / wet.pow(2).mean(1, keepdim=True).sqrt().clamp_min(1e-8)
        return wet * scale
