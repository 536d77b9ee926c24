"""The batched streaming model: one onnxruntime session, many streams, state carried per stream.

Each stream owns a buffer of samples not yet run and one row of every state tensor. `step()`
makes one `session.run` for all streams that hold a full chunk; `run()` repeats it until no
stream does. Zero state is the start of a stream. With a `Gate`, a stream's quiet chunks are
not run once its state has settled on quiet audio. A file with a check (contract.Check) has
its label's scores replaced by the check's look at the candidate frames.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from streamrnn.contract import (
    AUDIO_INPUT,
    DEVICES,
    WINDOW_INPUT,
    Check,
    ContractError,
    ModelInfo,
    check_signature,
    check_window_signature,
    parse_metadata,
    state_input,
)

PROVIDERS = dict(zip(DEVICES, ("CPUExecutionProvider", "CUDAExecutionProvider")))  # onnxruntime names


def _session(model: str | bytes, provider: str, threads: int) -> ort.InferenceSession:
    """An onnxruntime session for a file's path or a graph's bytes."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # plain allocations instead of an arena that keeps its high-water mark: after 64-stream calls
    # the session holds 12 MB instead of 24
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=[provider])


def open_contract(path: str | Path, device: str = "cpu", threads: int = 1) -> tuple[ort.InferenceSession, ModelInfo]:
    """Load a contract file with onnxruntime and validate metadata and signature."""
    path = Path(path)
    if device not in PROVIDERS:
        raise ValueError(f"device {device!r} is not one of {', '.join(DEVICES)}")
    provider = PROVIDERS[device]
    if provider not in ort.get_available_providers():
        raise ValueError(
            f"device {device!r} requested but onnxruntime has no {provider} (install onnxruntime-gpu for CUDA)"
        )
    if not path.is_file():
        raise ContractError(f"{path}: no such model file")
    try:
        session = _session(str(path), provider, threads)
    except Exception as exc:  # onnxruntime raises several unrelated types for bad files
        raise ContractError(f"{path}: not a loadable ONNX model ({_reason(exc)})") from None
    info = parse_metadata(path, session.get_modelmeta().custom_metadata_map)
    check_signature(info, session.get_inputs(), session.get_outputs())
    return session, info


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def windows(embeddings: np.ndarray, at: np.ndarray | list[int], frames: int) -> np.ndarray:
    """[len(at), frames, dim]: what a check reads at each frame of `at`, the `frames` embeddings
    ending there, zeros before the first (a stream's start). Serving and train-check both cut
    their windows here."""
    padded = np.concatenate([np.zeros((frames - 1, embeddings.shape[1]), np.float32), embeddings])
    return padded[np.asarray(at)[:, None] + np.arange(frames)[None, :]]


class _Looker:
    """A contract file's check (see contract.Check) run on candidate frames: its own session, and
    each stream's last embeddings (as the calls' output arrays and the stream's row in them, no
    copy: a call without candidates costs a list and a fill)."""

    def __init__(self, session: ort.InferenceSession, info: ModelInfo, threads: int, frames_per_call: int):
        check = info.check
        assert check is not None
        dim = session.get_outputs()[-1].shape[2]  # the embeddings' (check_signature)
        try:
            self.session = _session(check.model, session.get_providers()[0], threads)
        except Exception as exc:
            raise ContractError(f"{info.path}: the check's graph does not load ({_reason(exc)})") from None
        check_window_signature(info, self.session.get_inputs(), self.session.get_outputs(), dim)
        self.check: Check = check
        self.label = info.labels.index(check.label)
        self.calls = math.ceil((check.frames - 1) / frames_per_call)  # past calls a window reaches into
        self.history: dict[int, deque[tuple[np.ndarray, int]]] = {}  # row -> (embeddings, column)
        self.looked = 0  # windows looked at, all streams

    def start(self, row: int) -> None:
        self.history[row] = deque(maxlen=self.calls)

    def look(self, rows: list[int], scores: np.ndarray, embeddings: np.ndarray) -> None:
        """Replace the label's scores [streams, frames] in place: the check's probability where
        they reach `from`, else 0; and add these frames to each stream's history."""
        column = scores[:, :, self.label]
        start = self.check.start
        candidates = [(i, f) for i, values in enumerate(column.tolist()) for f, v in enumerate(values) if v >= start]
        column.fill(0.0)
        for i, f in candidates:  # one window a call: a stream's result does not depend on the others
            column[i, f] = self.session.run(None, {WINDOW_INPUT: self._window(rows[i], embeddings[:, i], f)})[0][0]
        self.looked += len(candidates)
        for i, row in enumerate(rows):
            self.history[row].append((embeddings, i))

    def _window(self, row: int, frames: np.ndarray, f: int) -> np.ndarray:
        """[1, check.frames, dim]: the stream's embeddings up to frame f of this call, zeros
        before its start."""
        past = [embeddings[:, i] for embeddings, i in self.history[row]]
        joined = np.concatenate([*past, frames[: f + 1]])
        return windows(joined, [len(joined) - 1], self.check.frames)


@dataclass(frozen=True)
class Gate:
    """Skips a stream's calls on quiet audio. A chunk is quiet when its mean power is under
    `level_dbfs` (dB relative to a full-scale square wave). Once `settle` seconds of quiet chunks
    in a row have run, further quiet chunks are not run: the state stays where the quiet left
    it and their frames repeat the last scores. The first loud chunk runs from that state."""

    level_dbfs: float
    settle: float = 0.5

    def __post_init__(self):
        if not self.level_dbfs < 0:
            raise ValueError(f"gate level {self.level_dbfs} dBFS must be below 0")
        if not self.settle > 0:
            raise ValueError(f"gate settle {self.settle} s must be positive")

    @classmethod
    def of(cls, level_dbfs: float, settle: float) -> Gate | None:
        """The gate a setting asks for: a level of 0 dBFS means none."""
        return cls(level_dbfs, settle) if level_dbfs else None


def check_gate(info: ModelInfo, gate: Gate | None) -> None:
    """Raise ValueError naming the file where a gate is asked of a model that is not audio."""
    if gate is not None and info.kind != "audio":
        raise ValueError(f"{info.path}: a gate needs an audio model, not {info.kind}")


@dataclass
class _Stream:
    row: int
    pending: deque[np.ndarray] = field(default_factory=deque)
    pending_len: int = 0
    frames: int = 0  # frames already scored: the stream time of the next frame
    quiet: int = 0  # quiet chunks in a row run (gated models)
    last: np.ndarray | None = None  # the last frame's scores (gated models)

    def take(self, n: int) -> np.ndarray:
        """The next n pending samples (n <= pending_len), touching only the pieces used."""
        head = self.pending.popleft()
        if len(head) < n:
            parts, have = [head], len(head)
            while have < n:
                parts.append(self.pending.popleft())
                have += len(parts[-1])
            head = np.concatenate(parts)
        if len(head) > n:
            self.pending.appendleft(head[n:])
        self.pending_len -= n
        return head[:n]


@dataclass(frozen=True, eq=False)
class _Whole:
    """The stream id of a whole signal in `score`: equal only to itself, named by its position."""

    index: int

    def __repr__(self) -> str:
        return f"signal {self.index}"


class StreamingModel:
    """A contract file served to any number of independent streams in batched calls."""

    def __init__(
        self,
        path: str | Path,
        device: str = "cpu",
        threads: int = 1,
        chunk_frames: int | None = None,
        max_batch: int = 64,
        gate: Gate | None = None,
    ):
        """`chunk_frames`: frames per call instead of the file's default (metadata `chunk`); files
        whose graph fixes the chunk take only that. `max_batch`: streams per call at most, which
        bounds the memory a call takes (streams beyond it wait for the next call; 64 already
        runs as cheaply per stream as larger batches). `gate`: skip quiet chunks (audio only)."""
        self.session, self.info = open_contract(path, device, threads)
        self.max_batch = max_batch
        self.chunk = chunk_frames * self.info.frame_hop if chunk_frames else self.info.chunk
        fixed = self.session.get_inputs()[0].shape[1]
        if chunk_frames is not None and chunk_frames < 1:
            raise ValueError(f"chunk_frames={chunk_frames} must be at least 1")
        if isinstance(fixed, int) and fixed != self.chunk:
            raise ContractError(
                f"{self.info.path}: its graph takes only chunks of {fixed} samples, not {chunk_frames} frames"
            )
        inputs = self.session.get_inputs()[1:]
        self._state_names = [state_input(i) for i in range(len(inputs))]
        self._states = [np.zeros((0, *i.shape[1:]), np.float32) for i in inputs]
        self._capacity = 0
        self._free_rows: list[int] = []
        self._streams: dict[Hashable, _Stream] = {}
        self.gated_frames = 0  # frames the gate did not run, all streams
        self.set_gate(gate)
        frames = self.chunk // self.info.frame_hop
        self._looker = _Looker(self.session, self.info, threads, frames) if self.info.check else None

    def set_gate(self, gate: Gate | None) -> None:
        """Gate quiet chunks from the next step on (None: run every chunk); audio models only."""
        check_gate(self.info, gate)
        self.gate = gate
        self._settle_chunks = math.ceil(round(gate.settle * self.info.sample_rate / self.chunk, 6)) if gate else 0
        self._quiet_energy = self.chunk * 10 ** (gate.level_dbfs / 10) if gate else 0.0  # sum of squares under it

    @property
    def checked_frames(self) -> int:
        """Frames the file's check looked at, all streams (0 without a check)."""
        return self._looker.looked if self._looker else 0

    @property
    def streams(self) -> list[Hashable]:
        return list(self._streams)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample: () for audio, (channels,) for sensors."""
        return () if self.info.kind == "audio" else (self.info.channels,)

    def add_stream(self, stream_id: Hashable) -> None:
        """Start a stream at zero state."""
        if stream_id in self._streams:
            raise KeyError(f"stream {stream_id!r} already exists")
        if not self._free_rows:
            self._grow()
        self._start(stream_id, self._free_rows.pop())

    def reset_stream(self, stream_id: Hashable) -> None:
        """Forget a stream's state and pending samples; its clock starts again at 0."""
        self._start(stream_id, self._get(stream_id).row)

    def remove_stream(self, stream_id: Hashable) -> None:
        self._free_rows.append(self._get(stream_id).row)
        del self._streams[stream_id]

    def stream_frames(self, stream_id: Hashable) -> int:
        """Frames scored so far on this stream."""
        return self._get(stream_id).frames

    def pending(self, stream_id: Hashable) -> int:
        """Samples received on this stream and not yet run."""
        return self._get(stream_id).pending_len

    def feed(self, stream_id: Hashable, samples: np.ndarray) -> None:
        """Queue samples (float32 in [-1, 1]; [n] for audio, [n, channels] for sensors)."""
        stream = self._get(stream_id)
        samples = np.asarray(samples, dtype=np.float32)
        if samples.ndim == 0 or samples.shape[1:] != self.sample_shape:
            raise ValueError(
                f"stream {stream_id!r}: samples of shape {samples.shape} do not fit "
                f"model {self.info.name} (expected [n{''.join(f', {c}' for c in self.sample_shape)}])"
            )
        if len(samples):
            stream.pending.append(samples)
            stream.pending_len += len(samples)

    def flush(self, stream_id: Hashable) -> None:
        """Pad a stream's last partial chunk with silence so its tail gets scored."""
        left = self.pending(stream_id) % self.chunk
        if left:
            self.feed(stream_id, np.zeros((self.chunk - left, *self.sample_shape), np.float32))

    def step(self) -> dict[Hashable, np.ndarray]:
        """One batched call for the streams with a full chunk (at most `max_batch` of them):
        {stream: scores[frames, labels]}."""
        chunk = self.chunk
        ready = [(sid, s) for sid, s in self._streams.items() if s.pending_len >= chunk]
        if not ready:
            return {}
        if len(ready) > self.max_batch:  # the streams furthest behind in stream time go first
            ready = heapq.nsmallest(self.max_batch, ready, key=lambda item: item[1].frames)
        frames = chunk // self.info.frame_hop
        chunks = [s.take(chunk) for _, s in ready]
        out: dict[Hashable, np.ndarray] = {}
        if self.gate is not None:
            ready, chunks = self._gated(ready, chunks, frames, out)
        if ready:
            self._call(ready, chunks, out)
        for _, s in ready:
            s.frames += frames
        return out

    def _call(self, ready: list[tuple[Hashable, _Stream]], chunks: list[np.ndarray], out: dict) -> None:
        """One session.run for these streams' chunks; their scores into `out`."""
        if len(ready) == 1:  # one stream (the usual live case): its state rows as views, no copies
            row = ready[0][1].row
            rows: slice | np.ndarray = slice(row, row + 1)
            feed = {AUDIO_INPUT: chunks[0][None]}
        else:
            rows = np.fromiter((s.row for _, s in ready), dtype=np.intp, count=len(ready))
            feed = {AUDIO_INPUT: np.stack(chunks)}
        for name, states in zip(self._state_names, self._states):
            feed[name] = states[rows]
        scores, *next_states = self.session.run(None, feed)
        if self._looker:
            self._looker.look([s.row for _, s in ready], scores, next_states.pop())
        for states, new in zip(self._states, next_states):
            states[rows] = new
        for i, (sid, s) in enumerate(ready):
            out[sid] = scores[i]
            if self.gate is not None:
                s.last = scores[i][-1]

    def _gated(self, ready, chunks, frames: int, out: dict) -> tuple[list, list]:
        """Streams whose chunk the gate skips get their last scores in `out` (their clock moves
        on); returns the streams and chunks still to run."""
        run, run_chunks = [], []
        for (sid, s), x in zip(ready, chunks):
            if float(np.dot(x, x)) >= self._quiet_energy:
                s.quiet = 0
            elif s.quiet < self._settle_chunks or s.last is None:
                s.quiet += 1
            else:
                out[sid] = np.tile(s.last, (frames, 1))
                s.frames += frames
                self.gated_frames += frames
                continue
            run.append((sid, s))
            run_chunks.append(x)
        return run, run_chunks

    def run(self) -> dict[Hashable, np.ndarray]:
        """Step until no stream holds a full chunk; scores of each stream concatenated in order."""
        collected: dict[Hashable, list[np.ndarray]] = {}
        while out := self.step():
            for sid, scores in out.items():
                collected.setdefault(sid, []).append(scores)
        return {sid: np.concatenate(parts) for sid, parts in collected.items()}

    def score(self, signals: list[np.ndarray]) -> list[np.ndarray]:
        """Per-frame scores [frames, labels] of whole signals: each a new stream from zero state,
        all run batched, each tail padded to a whole chunk."""
        ids = [_Whole(i) for i in range(len(signals))]  # private ids: never clash with the caller's streams
        for sid, signal in zip(ids, signals):
            self.add_stream(sid)
            self.feed(sid, signal)
            self.flush(sid)
        scores = self.run()
        for sid in ids:
            self.remove_stream(sid)
        empty = np.zeros((0, len(self.info.labels)), np.float32)
        return [scores.get(sid, empty) for sid in ids]

    def warm_up(self) -> None:
        """One call on a chunk of silence: onnxruntime plans a graph's work on its first call, so
        a stream's first chunk then costs what every later one does."""
        self.score([np.zeros((self.chunk, *self.sample_shape), np.float32)])

    def _start(self, stream_id: Hashable, row: int) -> None:
        for s in self._states:
            s[row] = 0.0
        if self._looker:
            self._looker.start(row)
        self._streams[stream_id] = _Stream(row)

    def _get(self, stream_id: Hashable) -> _Stream:
        try:
            return self._streams[stream_id]
        except KeyError:
            raise KeyError(f"no stream {stream_id!r}") from None

    def _grow(self) -> None:
        old = self._capacity
        new = self._capacity = max(8, 2 * old)
        self._states = [np.concatenate([s, np.zeros((new - old, *s.shape[1:]), np.float32)]) for s in self._states]
        self._free_rows.extend(range(new - 1, old - 1, -1))
