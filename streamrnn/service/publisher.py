"""The event publisher: a bound ZeroMQ XPUB socket sending multipart [topic, JSON].

XPUB behaves as PUB for subscribers and also shows their subscriptions. Sends never block.
Each event is first offered with XPUB_NODROP, which fails if any subscriber's queue is at its
high-water mark; then it is counted as a drop and sent again without NODROP, which delivers it
to every subscriber with room. So `drops` counts events that some subscriber missed, and one slow
subscriber neither stalls recognition nor starves the others.
"""

from __future__ import annotations

import socket as pysocket
import struct
import time

import zmq

from streamrnn.keys import ServerKeys
from streamrnn.wire import Event, Stamper


class BindError(ValueError):
    """An address the service cannot bind; the message names it."""


def bind(socket: zmq.Socket, address: str, what: str, close: bool = False) -> None:
    """Bind `socket` (closed again if `close`, as `serve --check` does); an ipc:// path where a
    running service listens is refused, where libzmq would take it over silently."""
    try:
        if address.startswith("ipc://") and _listening(address[len("ipc://") :]):
            raise BindError(f"{what} {address}: cannot bind (another process is listening there)")
        try:
            socket.bind(address)
        except zmq.ZMQError as exc:
            reason = zmq.strerror(exc.errno) if exc.errno is not None else str(exc)
            raise BindError(f"{what} {address}: cannot bind ({reason})") from None
    except BindError:
        socket.close(linger=0)
        raise
    if close:
        socket.close(linger=0)


def _listening(path: str) -> bool:
    """Whether a process accepts connections on the unix socket at `path`."""
    probe = pysocket.socket(pysocket.AF_UNIX, pysocket.SOCK_STREAM)
    try:
        probe.connect(path)
        return True
    except OSError:  # no such file, or a stale socket nobody listens on
        return False
    finally:
        probe.close()


class Publisher:
    def __init__(self, context: zmq.Context, address: str, send_hwm: int, keys: ServerKeys | None = None):
        self.address = address
        self._socket = context.socket(zmq.XPUB)
        if keys:
            keys.apply(self._socket)
        self._socket.setsockopt(zmq.SNDHWM, send_hwm)
        self._socket.setsockopt(zmq.XPUB_NODROP, 1)
        self._socket.setsockopt(zmq.LINGER, 500)
        self._monitor = self._socket.get_monitor_socket(zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
        try:
            bind(self._socket, address, "publish")
        except BindError:
            self._monitor.close(linger=0)
            raise
        self._stamper = Stamper()
        self.published = 0
        self.drops = 0
        self.subscribers = 0

    def publish(self, event: Event) -> Event:
        """Stamp and send one event; count it as dropped if a subscriber's queue is full."""
        event = self._stamper.stamp(event)
        parts = event.encode()
        try:
            self._socket.send_multipart(parts, flags=zmq.NOBLOCK)
        except zmq.Again:
            self.drops += 1
            self._socket.setsockopt(zmq.XPUB_NODROP, 0)
            try:
                self._socket.send_multipart(parts, flags=zmq.NOBLOCK)
            finally:
                self._socket.setsockopt(zmq.XPUB_NODROP, 1)
        self.published += 1
        return event

    def poll(self) -> None:
        """Take in subscription and connection news (cheap; call once per tick)."""
        while self._socket.poll(0):
            self._socket.recv()
        while self._monitor.poll(0):
            # a monitor event: [16-bit event id + 32-bit value, endpoint]; parsed here because
            # zmq.utils.monitor pulls in asyncio and ssl (5 MB of resident memory)
            event, _ = self._monitor.recv_multipart()
            self.subscribers += 1 if struct.unpack_from("=H", event)[0] == zmq.EVENT_ACCEPTED else -1

    def wait_for_subscriber(self, seconds: float) -> bool:
        """Block until a first subscription arrives (or `seconds` pass)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self._socket.poll(int(left * 1000)):
                self._socket.recv()
                return True
        return False

    def close(self) -> None:
        self._socket.disable_monitor()
        self._monitor.close(linger=0)
        self._socket.close()
