"""Our own streaming speech encoder, distilled from the teacher (training/teacher.py).

An in-graph front end of 10-ms frames (the log-mel, or a learned filterbank: `front`), `stack`
frames stacked into one GRU step (4: 40 ms, 8: 80 ms), a GRU stack, and at each 80 ms (where the
teacher emits) a linear map into the teacher's 96-d embedding space. Its state is the front
end's sample overlap and the GRU's hidden state, so it streams and batches exactly like every
model here. `streamrnn distill` trains it
(training/distill.py); the checkpoint ships in `training/encoders/` so a head trains on it with
`model.encoder = "student"` without redoing that step.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from streamrnn.recipe.schema import TEACHER_HOP, TEACHER_RATE, encoder_path

from .frontend import FilterBank, LogMel, Normalize

MEL_HOP = 160
FRONTS = ("logmel", "filterbank")
BUNDLED = "student.pt"


def steps_per_embedding(stack: int) -> int:
    """GRU steps per 80-ms embedding when each step stacks `stack` 10-ms frames (ValueError
    unless the steps fill 80 ms exactly)."""
    if stack < 1 or TEACHER_HOP % (MEL_HOP * stack):
        raise ValueError(f"stack must divide the 8 frames of 80 ms (1, 2, 4 or 8), not {stack}")
    return TEACHER_HOP // (MEL_HOP * stack)


class StudentEncoder(nn.Module):
    """PCM chunks -> one 96-d embedding per 80 ms. State: the front end's last 240 samples, then
    the GRU's hidden state [B, layers, hidden]."""

    target_mean: torch.Tensor
    target_std: torch.Tensor

    def __init__(
        self,
        hidden: int = 192,
        layers: int = 2,
        n_mels: int = 40,
        dim: int = 96,
        front: str = "logmel",
        stack: int = 4,
        attribution: str = "",
    ):
        super().__init__()
        if front not in FRONTS:
            raise ValueError(f"front {front!r} is not one of {', '.join(FRONTS)}")
        self.config = dict(hidden=hidden, layers=layers, n_mels=n_mels, dim=dim, front=front, stack=stack)
        self.attribution = attribution
        self.dim = dim
        self.stack = stack
        self.steps_per_embedding = steps_per_embedding(stack)
        bank = LogMel if front == "logmel" else FilterBank
        self.mel = bank(TEACHER_RATE, 400, MEL_HOP, n_mels)
        self.norm = Normalize(n_mels)
        self.rnn = nn.GRU(n_mels * stack, hidden, layers, batch_first=True)
        self.out = nn.Linear(hidden, dim)  # predicts the teacher's embedding standardised per dimension
        self.register_buffer("target_mean", torch.zeros(dim))
        self.register_buffer("target_std", torch.ones(dim))

    @classmethod
    def load(cls, path: str | Path | None = None, frozen: bool = True) -> StudentEncoder:
        """The distilled encoder from its checkpoint: a path, or a bundled one's file name
        (default: student.pt)."""
        path = encoder_path(str(path or BUNDLED))
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no student encoder checkpoint (make one: streamrnn distill)")
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        encoder = cls(**checkpoint["config"], attribution=checkpoint["attribution"])
        encoder.load_state_dict(checkpoint["weights"])
        return encoder.requires_grad_(False) if frozen else encoder

    def save(self, path: str | Path, **extra) -> None:
        torch.save(
            {"config": self.config, "attribution": self.attribution, "weights": self.state_dict(), **extra}, path
        )

    def zero_state(self, batch: int) -> list[torch.Tensor]:
        return self.mel.zero_state(batch) + [torch.zeros(batch, self.rnn.num_layers, self.rnn.hidden_size)]

    def frames(self, audio: torch.Tensor, state: torch.Tensor):
        """audio [B, N] -> front-end frames [B, N/160, bands] and the front end's next state."""
        feats, (samples,) = self.mel(audio, [state])
        return feats, samples

    def standardised(self, frames: torch.Tensor, hidden: torch.Tensor):
        """front-end frames [B, T, bands] (any after the last whole step dropped) -> (standardised
        embeddings [B, T/8, dim], next hidden): what distillation fits to the teacher's."""
        x = self.norm(frames[:, : frames.shape[1] // self.stack * self.stack])  # whole steps only
        x = x.reshape(x.shape[0], x.shape[1] // self.stack, self.stack * x.shape[2])
        y, hidden = self.rnn(x, hidden.transpose(0, 1).contiguous())
        step = self.steps_per_embedding
        return self.out(y[:, step - 1 :: step]), hidden.transpose(0, 1)

    def encode(self, frames: torch.Tensor, hidden: torch.Tensor):
        """front-end frames [B, T, bands] -> ([B, T/8, dim] in the teacher's scale, next hidden)."""
        z, hidden = self.standardised(frames, hidden)
        return z * self.target_std + self.target_mean, hidden

    def forward(self, audio: torch.Tensor, state: list[torch.Tensor]):
        """audio [B, N] (N a multiple of 1280) -> ([B, N/1280, dim], next state)."""
        frames, samples = self.frames(audio, state[0])
        embeddings, hidden = self.encode(frames, state[1])
        return embeddings, [samples, hidden]
