"""A microphone through sounddevice (PortAudio); imported only when a microphone is used.

Captures mono 16-bit PCM (what microphones deliver) at the device's rate (or `mic.rate`); the
service converts it to each model's rate. Overflows are counted; a device that fails or
disappears is reopened with backoff.
"""

from __future__ import annotations

import threading

import numpy as np
import sounddevice as sd

from streamrnn.service.sources import Emit, Problem, Samples, Source, SourceState

STREAM = "mic"


def _describe_inputs() -> str:
    try:
        devices = [f"{d['index']} {d['name']!r}" for d in sd.query_devices() if d["max_input_channels"] > 0]
    except sd.PortAudioError:
        devices = []
    return ", ".join(devices) or "none"


def _device(spec: str):
    return int(spec) if spec.isdigit() else (spec or None)


class MicSource(Source):
    finite = False

    def __init__(self, device: str, config):
        self.name = f"mic:{device}" if device else "mic"
        self.config = config
        self.device = _device(device)
        try:
            info = sd.query_devices(self.device, "input")
        except (ValueError, sd.PortAudioError) as exc:
            raise ValueError(
                f"source {self.name}: no such input device ({exc}); input devices: "
                f"{_describe_inputs()}; use --source FILE or --source - instead"
            ) from None
        self.rate = float(config.rate or info["default_samplerate"])
        self.block = max(1, int(self.rate * config.block_ms / 1000))

    def run(self, emit: Emit, stop: threading.Event) -> None:
        def callback(indata, frames, time_info, status):
            if status.input_overflow:
                emit(Problem("mic_overflows", f"{self.name}: input overflow (samples lost)", STREAM))
            emit(Samples(STREAM, indata[:, 0].astype(np.float32) / 32768.0, self.rate))

        backoff = 0.5
        while not stop.is_set():
            try:
                with sd.InputStream(
                    device=self.device,
                    channels=1,
                    samplerate=self.rate,
                    blocksize=self.block,
                    dtype="int16",
                    callback=callback,
                ) as stream:
                    emit(SourceState(self.name, "running"))
                    backoff = 0.5
                    while stream.active and not stop.wait(0.1):
                        pass
                    if stop.is_set():
                        return
                    raise sd.PortAudioError("input stream stopped")
            except sd.PortAudioError as exc:
                reason = str(exc).splitlines()[0]
                emit(Problem("mic_retries", f"{self.name}: {reason}; retrying in {backoff:g} s"))
                emit(SourceState(self.name, f"retrying: {reason}"))
                if stop.wait(backoff):
                    return
                backoff = min(2 * backoff, self.config.retry_max)
