"""The streaming recurrent model: front end -> normalisation -> [causal convolution] -> RNN stack
-> per-frame logits.

The audio front end is our log-mel (a frame every 10 ms) or a frozen speech encoder (an
embedding every 80 ms): with `model.encoder = "teacher"` the pretrained one (training/teacher.py),
with `"student"` our streaming GRU distilled from it (training/student.py). State is a list of
batch-first tensors: for audio the front end's state first (log-mel: its sample overlap; the
teacher: its sample overlap and each layer's past rows; the student: its sample overlap and GRU
state), then the convolution's past frames
where there is one, then the RNN's hidden state ([B, layers, hidden]; LSTM adds its cell state).
A zero state is the start of a stream; `forward` returns the state to pass with the next chunk.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from streamrnn.recipe.schema import Recipe

from .frontend import FrameContext, LogMel, Normalize
from .student import StudentEncoder
from .teacher import TeacherEncoder

CELLS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


class StreamingRNN(nn.Module):
    def __init__(self, recipe: Recipe):
        super().__init__()
        m, d = recipe.model, recipe.data
        self.kind = d.kind
        self.frontend: TeacherEncoder | StudentEncoder | LogMel | None
        if d.kind == "audio" and m.encoder:
            self.frontend = TeacherEncoder() if m.encoder == "teacher" else StudentEncoder.load(m.encoder_file or None)
            features = self.frontend.dim
        elif d.kind == "audio":
            self.frontend = LogMel(d.sample_rate, m.window, m.hop, m.n_mels, m.f_min, m.f_max)
            features = m.n_mels
        else:
            self.frontend = None
            features = d.channels
        self.frame_hop = m.hop if d.kind == "audio" else 1
        self.front_states = len(self.frontend.zero_state(0)) if self.frontend else 0
        self.norm = Normalize(features)
        self.context = None
        if m.context_frames:
            self.context = FrameContext(features, m.hidden, m.context_frames)
            features = m.hidden
        self.cell = m.cell
        self.rnn = CELLS[m.cell](
            features, m.hidden, m.layers, batch_first=True, dropout=m.dropout if m.layers > 1 else 0.0
        )
        self.head = nn.Linear(m.hidden, len(d.labels))
        self.readout = "mean" if recipe.train.target == "frame" else "peak"  # how clips are judged

    def zero_state(self, batch: int) -> list[torch.Tensor]:
        device = self.head.weight.device
        hidden = torch.zeros(batch, self.rnn.num_layers, self.rnn.hidden_size, device=device)
        state = [x.to(device) for x in self.frontend.zero_state(batch)] if self.frontend else []
        if self.context is not None:
            state.append(self.context.zero_state(batch).to(device))
        return state + [hidden] * (2 if self.cell == "lstm" else 1)

    def features(self, audio: torch.Tensor, state: list[torch.Tensor]):
        """Raw samples -> normalised frames [B, T, F], plus the front end's next state."""
        if self.frontend is None:
            return self.norm(audio), []
        feats, front_state = self.frontend(audio, state[: self.front_states])
        return self.norm(feats), front_state

    def forward(
        self,
        audio: torch.Tensor,
        state: list[torch.Tensor],
        feature_hook: Callable[[torch.Tensor], torch.Tensor] | None = None,
        detach_every: int | None = None,
    ):
        """audio [B, N] or [B, N, C] -> (logits [B, N/hop, labels], next state).

        `detach_every` (frames) runs truncated backpropagation through time: the state is carried
        across segment boundaries but gradients stop there. `feature_hook` (training only) alters
        the normalised frames, e.g. SpecAugment masking.
        """
        feats, front_state = self.features(audio, state)
        if feature_hook is not None:
            feats = feature_hook(feats)
        if self.context is not None:
            feats, past = self.context(feats, state[len(front_state)])
            front_state = front_state + [past]
        layers = [h.transpose(0, 1).contiguous() for h in state[len(front_state) :]]
        hidden: torch.Tensor | tuple[torch.Tensor, ...] = tuple(layers) if self.cell == "lstm" else layers[0]
        if detach_every is None:  # serving and export: one call (no slicing in the graph)
            out, hidden = self.rnn(feats, hidden)
        else:
            outputs = []
            for start in range(0, feats.shape[1], detach_every):
                if start:
                    hidden = tuple(h.detach() for h in hidden) if isinstance(hidden, tuple) else hidden.detach()
                part, hidden = self.rnn(feats[:, start : start + detach_every], hidden)
                outputs.append(part)
            out = torch.cat(outputs, dim=1)
        final = list(hidden) if isinstance(hidden, tuple) else [hidden]
        logits = self.head(out)
        return logits, front_state + [h.transpose(0, 1) for h in final]
