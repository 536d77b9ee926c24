"""Wyoming (the protocol Home Assistant speaks to voice services): a wake-word server on
`wyoming:tcp://HOST:PORT`, with the `wyoming` package from PyPI.

Each client connection is a stream of its own (`wyoming1`, `wyoming2`, ...), batched with every
other stream in the service's model calls. `describe` gets `info` (one wake program, a wake model
per reported label); `detect` names the labels a client wants; `audio-start`, `audio-chunk` (any
rate, 8/16/32-bit width, any channels), `audio-stop` carry its audio; it gets `detection` (name,
timestamp in ms of stream time) as they happen and `not-detected` at `audio-stop` when nothing
fired. Clients are held to the `[ingest]` limits every remote sender has (message size, rate,
speed, live streams). A client that sends what is not a Wyoming event is counted and
disconnected; audio that cannot be used is counted and dropped; the others never notice.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import itertools
import json
import logging
import socket
import threading
from collections.abc import Callable
from functools import partial
from urllib.parse import urlsplit

import numpy as np
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.event import Event as WyomingEvent
from wyoming.info import Attribution, Describe, Info, WakeModel, WakeProgram
from wyoming.server import AsyncEventHandler, AsyncServer
from wyoming.wake import Detect, Detection, NotDetected

from streamrnn.addresses import is_loopback
from streamrnn.contract import ModelInfo
from streamrnn.ingest_format import MAX_CHANNELS
from streamrnn.service.config import IngestConfig, WyomingConfig
from streamrnn.service.sources import Emit, Problem, Samples, Source, SpeedCredit, StreamEnd
from streamrnn.wire import DetectionEvent, Event

log = logging.getLogger("streamrnn")

WIDTHS = {1: ("u1", 128.0, 128.0), 2: ("<i2", 0.0, 32768.0), 4: ("<i4", 0.0, 2147483648.0)}  # dtype, offset, scale


class WyomingError(ValueError):
    """A Wyoming address the service cannot bind; the message names it."""


class NotWyoming(ValueError):
    """What a client sent is not a Wyoming event the server takes."""


class Closed(Exception):
    """A connection closed for the time it took; `counter` names what is counted."""

    def __init__(self, counter: str, message: str):
        super().__init__(message)
        self.counter = counter


async def read_event(
    reader: asyncio.StreamReader, max_bytes: int, wait: float | None = None, within: float | None = None
) -> WyomingEvent | None:
    """The next event (a JSON line, then its data and payload), or None at the end of the
    connection; raises NotWyoming for anything else, before reading more than `max_bytes`.
    Raises Closed if no event begins within `wait` seconds, or one that began is not whole within
    `within` (a client that holds its connection, or sends a byte at a time)."""
    try:
        first = await asyncio.wait_for(reader.readexactly(1), wait)
    except asyncio.IncompleteReadError:
        return None
    except TimeoutError:
        raise Closed("wyoming_idle_closed", f"no event in {wait:g} s; closed") from None
    try:
        return await asyncio.wait_for(_rest_of_event(first, reader, max_bytes), within)
    except TimeoutError:
        raise Closed("wyoming_slow_closed", f"an event not whole within {within:g} s; closed") from None


async def _rest_of_event(first: bytes, reader: asyncio.StreamReader, max_bytes: int) -> WyomingEvent:
    try:
        line = first + await reader.readline()
    except ValueError:  # a line past the reader's limit
        raise NotWyoming("a header line too long to be an event") from None
    try:
        header = json.loads(line)
    except (ValueError, RecursionError):
        raise NotWyoming(f"not a JSON event: {line[:40]!r}") from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise NotWyoming(f"not an event (no type): {line[:40]!r}")
    data = header.get("data") or {}
    lengths = [header.get("data_length") or 0, header.get("payload_length") or 0]
    if not isinstance(data, dict) or not all(isinstance(n, int) and 0 <= n <= max_bytes for n in lengths):
        raise NotWyoming(f"{header['type'][:40]}: data, data_length or payload_length unusable (at most {max_bytes})")
    try:
        if lengths[0]:
            extra = json.loads(await reader.readexactly(lengths[0]))
            if not isinstance(extra, dict):
                raise NotWyoming(f"{header['type'][:40]}: its data is not a JSON object")
            data = data | extra
        payload = await reader.readexactly(lengths[1]) if lengths[1] else None
    except asyncio.IncompleteReadError:
        raise NotWyoming(f"{header['type'][:40]}: the connection ended inside it") from None
    except (ValueError, RecursionError):
        raise NotWyoming(f"{header['type'][:40]}: its data is not JSON") from None
    return WyomingEvent(type=header["type"], data=data, payload=payload)


def _integer(event: WyomingEvent, key: str) -> int:
    value = event.data.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise NotWyoming(f"{event.type}: {key} {str(value)[:20]} is not an integer")
    return value


class WyomingSource(Source):
    finite = False

    def __init__(self, uri: str, models: Callable[[], list[ModelInfo]], limits: IngestConfig, timeouts: WyomingConfig):
        """`models` gives the infos of the models served now (they change on reload); `timeouts`
        (the [wyoming] table) how long a connection may wait and take."""
        self.name, self.uri, self.limits, self.timeouts = f"wyoming:{uri}", uri, limits, timeouts
        self.zeroconf = timeouts.zeroconf
        parts = urlsplit(uri)  # tcp://HOST:PORT, as the config's check has made sure
        host, self.port = parts.hostname or "", parts.port or 0
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, self.port))
            except OSError as exc:
                raise WyomingError(f"source {self.name}: cannot bind ({exc.strerror})") from None
        if not is_loopback(uri):
            log.warning("%s: Wyoming has no authentication: whoever reaches it can send audio to it", self.name)
        self.models = models
        self._ids = itertools.count(1)
        self._clients: dict[str, _Client] = {}  # stream -> its connection
        self.connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def run(self, emit: Emit, stop: threading.Event) -> None:
        loop = self._loop = asyncio.new_event_loop()
        server = AsyncServer.from_uri(self.uri)

        async def serve() -> None:
            task = asyncio.create_task(server.run(partial(_Client, self, emit)))
            if self.zeroconf:
                await self._announce(emit)
            while not stop.is_set() and not task.done():
                await asyncio.sleep(0.1)
            await server.stop()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            if task.done() and not task.cancelled() and task.exception():
                raise task.exception()  # type: ignore[misc]

        try:
            loop.run_until_complete(serve())
        finally:
            self._loop = None
            loop.close()

    async def _announce(self, emit: Emit) -> None:
        """mDNS `_wyoming._tcp` under the configured name, so Home Assistant discovers the server."""
        try:
            from wyoming.zeroconf import HomeAssistantZeroconf

            await HomeAssistantZeroconf(self.port, self.zeroconf).register_server()
            log.info("%s: announced as %s._wyoming._tcp.local.", self.name, self.zeroconf)
        except Exception as exc:  # no multicast route, zeroconf not installed: serving goes on
            emit(Problem("wyoming_zeroconf_failures", f"{self.name}: cannot announce over mDNS: {exc}"))

    def new_stream(self, client: _Client) -> str:
        stream = f"wyoming{next(self._ids)}"
        self._clients[stream] = client
        return stream

    def on_event(self, event: Event) -> None:
        """From the loop's thread: a detection of one of this source's streams goes to its client."""
        client = self._clients.get(event.stream or "")
        if client is not None and isinstance(event, DetectionEvent) and self._loop is not None:
            self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(client.detected(event)))

    def on_stream_done(self, stream: str) -> None:
        """From the loop's thread: the stream's audio is all scored."""
        client = self._clients.pop(stream, None)
        if client is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(client.done()))


class _Client(AsyncEventHandler):
    """One client connection: its stream, the labels it asked for, whether any fired."""

    def __init__(self, source: WyomingSource, emit: Emit, reader, writer):
        super().__init__(reader, writer)
        self.source, self.emit = source, emit
        self.limits = source.limits
        self.stream: str | None = None
        self.names: set[str] | None = None
        self.fired = False
        self.credit = SpeedCredit(source.limits.max_speed, source.limits.burst_seconds)

    async def run(self) -> None:
        self.source.connections += 1
        try:
            if self.source.connections > self.source.limits.max_streams:
                self._problem("wyoming_too_many_clients", f"{self.source.connections - 1} clients connected")
                return
            t = self.source.timeouts
            wait = t.first_event_timeout
            while event := await read_event(self.reader, self.limits.max_message_bytes, wait, t.read_timeout):
                await self.handle_event(event)
                wait = t.idle_timeout
        except Closed as closed:
            self._problem(closed.counter, str(closed))
        except ConnectionError:  # the client reset its connection: it left, nothing it sent was wrong
            pass
        except Exception as exc:  # not Wyoming: this client goes, the others stay
            self._problem("wyoming_bad_events", f"{type(exc).__name__}: {exc}; disconnected")
        finally:
            self.source.connections -= 1
            await self.disconnect()
            self.writer.close()

    async def handle_event(self, event: WyomingEvent) -> bool:
        if Describe.is_type(event.type):
            await self.write_event(self._info().event())
        elif Detect.is_type(event.type):
            names = event.data.get("names")
            if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
                raise NotWyoming(f"detect: names {str(names)[:40]} is not a list of names")
            self.names = set(names) if names else None
        elif AudioStart.is_type(event.type):
            self._start()
        elif AudioChunk.is_type(event.type):
            self._chunk(event)
        elif AudioStop.is_type(event.type) and self.stream is not None:
            self.emit(StreamEnd(self.stream))  # `done` follows once its tail is scored
            self.stream = None
        return True

    def _problem(self, counter: str, what: str) -> None:
        self.emit(Problem(counter, f"{self.source.name}: client {self.stream or '(no stream)'}: {what}", self.stream))

    def _start(self) -> None:
        if self.stream is not None:  # audio-start again without a stop: the old stream ends
            self.emit(StreamEnd(self.stream))
        self.stream, self.fired = self.source.new_stream(self), False  # the connection keeps its credit

    def _chunk(self, event: WyomingEvent) -> None:
        if self.stream is None:
            self._start()
        assert self.stream is not None
        rate, width, channels = (_integer(event, key) for key in ("rate", "width", "channels"))
        audio = event.payload or b""
        if (
            width not in WIDTHS
            or not 1 <= channels <= MAX_CHANNELS
            or not self.limits.min_audio_rate <= rate <= self.limits.max_rate
            or len(audio) % (width * channels)
        ):
            self._problem(
                "wyoming_bad_audio",
                f"{len(audio)} bytes of width {width}, {channels} channel(s) at {rate} Hz are not audio it takes "
                f"(width 1, 2 or 4; rate within [{self.limits.min_audio_rate:g}, {self.limits.max_rate:g}]); "
                "chunk dropped",
            )
            return
        seconds = len(audio) / (width * channels * rate)
        if seconds > self.limits.max_message_seconds or not self.credit.take(seconds):
            self._problem(
                "wyoming_over_limits",
                f"{seconds:.2f} s chunk over ingest.max_message_seconds or faster than ingest.max_speed; dropped",
            )
            return
        dtype, offset, scale = WIDTHS[width]
        samples = (np.frombuffer(audio, dtype=dtype).astype(np.float32) - offset) / np.float32(scale)
        if channels > 1:
            samples = samples.reshape(-1, channels)
        self.emit(Samples(self.stream, samples, float(rate)))

    def _info(self) -> Info:
        def attribution(info: ModelInfo) -> Attribution:
            return Attribution(name=info.license or "streamrnn", url="")

        models = [
            WakeModel(
                name=label,
                attribution=attribution(info),
                installed=True,
                description=f"{label}: {info.description} ({info.name} {info.version})",
                version=info.version,
                languages=["en"],  # every bundled model is English; contract files name no language
                phrase=label,
            )
            for info in self.source.models()
            if info.kind == "audio"
            for label in info.thresholds
            if label != info.background_label
        ]
        program = WakeProgram(
            name="streamrnn",
            attribution=Attribution(name="streamrnn", url=""),
            installed=True,
            description="streaming recognition with stateful recurrent networks",
            version=importlib.metadata.version("streamrnn"),
            models=models,
        )
        return Info(wake=[program])

    async def detected(self, event: DetectionEvent) -> None:
        if self.names is None or event.label in self.names:
            self.fired = True
            await self._send(Detection(name=event.label, timestamp=round(event.end * 1000)).event())

    async def done(self) -> None:
        if not self.fired:
            await self._send(NotDetected().event())

    async def _send(self, event) -> None:
        try:
            await self.write_event(event)
        except (ConnectionError, RuntimeError):
            pass  # the client has gone

    async def disconnect(self) -> None:
        if self.stream is not None:  # gone mid-stream: the stream ends with what it sent
            self.emit(StreamEnd(self.stream))
            self.stream = None
