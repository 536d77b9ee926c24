"""The event publisher: a bound ZeroMQ XPUB socket sending multipart [topic, JSON].

XPUB behaves as PUB for subscribers and also shows their subscriptions. With XPUB_NODROP and
non-blocking sends, a message past a subscriber's high-water mark fails instead of vanishing,
so drops are counted; recognition never waits for a slow subscriber.
"""

from __future__ import annotations

import time

import zmq
from zmq.utils.monitor import recv_monitor_message

from .events import Stamper, encode


class BindError(ValueError):
    """An address the service cannot bind; the message names it."""


def bind(socket: zmq.Socket, address: str, what: str) -> None:
    try:
        socket.bind(address)
    except zmq.ZMQError as exc:
        socket.close(linger=0)
        raise BindError(f"{what} {address}: cannot bind ({exc.strerror})") from None


class Publisher:
    def __init__(self, context: zmq.Context, address: str, send_hwm: int):
        self.address = address
        self._socket = context.socket(zmq.XPUB)
        self._socket.setsockopt(zmq.SNDHWM, send_hwm)
        self._socket.setsockopt(zmq.XPUB_NODROP, 1)
        self._socket.setsockopt(zmq.LINGER, 500)
        self._monitor = self._socket.get_monitor_socket(zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
        bind(self._socket, address, "publish")
        self._stamper = Stamper()
        self.published = 0
        self.drops = 0
        self.subscribers = 0

    def publish(self, event: dict) -> dict:
        """Stamp and send one event; count it as dropped if a subscriber's queue is full."""
        event = self._stamper.stamp(event)
        try:
            self._socket.send_multipart(encode(event), flags=zmq.NOBLOCK)
            self.published += 1
        except zmq.Again:
            self.drops += 1
        return event

    def poll(self) -> None:
        """Take in subscription and connection news (cheap; call once per tick)."""
        while self._socket.poll(0):
            self._socket.recv()
        while self._monitor.poll(0):
            message = recv_monitor_message(self._monitor)
            self.subscribers += 1 if message["event"] == zmq.EVENT_ACCEPTED else -1

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
