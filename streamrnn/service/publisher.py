"""The event publisher: a bound ZeroMQ XPUB socket sending multipart [topic, JSON].

XPUB behaves as PUB for subscribers and also shows their subscriptions. Sends never block.
Each event is first offered with XPUB_NODROP, which fails if any subscriber's queue is at its
high-water mark; then it is counted as a drop and sent again without NODROP, which delivers it
to every subscriber with room, so one slow subscriber neither stalls recognition nor starves the
others. libzmq then skips the full subscriber until it has drained, without telling, so `drops`
counts stalls begun, not every event missed (measured: 2 drops while a stalled subscriber missed
4,980 of 5,000 events); a subscriber of every topic sees each missed event as a gap in `seq`.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

import zmq

from streamrnn.addresses import BindError, bind, rebind
from streamrnn.keys import ServerKeys
from streamrnn.wire import Event, Stamper

SUBSCRIPTIONS_PER_POLL = 1000  # subscription messages taken per tick at most: a flood cannot stall the loop
MAX_TOPIC = 256  # bytes; a longer subscription is refused


class Publisher:
    """Subscriptions are applied by hand (XPUB_MANUAL), so each is counted and bounded: at most
    `max_subscriptions` live, none longer than MAX_TOPIC; what is refused goes to `problem`."""

    def __init__(
        self,
        context: zmq.Context,
        address: str,
        send_hwm: int,
        keys: ServerKeys | None = None,
        max_subscriptions: int = 10000,
        problem: Callable[[str, str], None] = lambda counter, message: None,
        instance: str | None = None,
    ):
        self.address = address
        self._socket = context.socket(zmq.XPUB)
        if keys:
            keys.apply(self._socket)
        self._socket.setsockopt(zmq.SNDHWM, send_hwm)
        self._socket.setsockopt(zmq.XPUB_NODROP, 1)
        self._socket.setsockopt(zmq.XPUB_MANUAL, 1)
        self._socket.setsockopt(zmq.LINGER, 500)
        self._max_subscriptions, self._problem = max_subscriptions, problem
        self._topics: dict[bytes, int] = {}  # live subscriptions applied, by topic
        self._monitor = self._socket.get_monitor_socket(
            zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_ACCEPT_FAILED
        )
        try:
            bind(self._socket, address, "publish")
        except BindError:
            self._monitor.close(linger=0)
            raise
        self._stamper = Stamper(instance)
        self.published = 0
        self.drops = 0
        self.subscribers = 0

    def reconnect_all(self) -> None:
        """Drop every subscriber's connection (the socket bound anew): each that may still come in
        reconnects and is asked for its key again; a revoked one is refused."""
        rebind(self._socket, self.address, "publish")

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
        for _ in range(SUBSCRIPTIONS_PER_POLL):
            if not self._socket.poll(0):
                break
            self._take_subscription(self._socket.recv())
        while self._monitor.poll(0):
            # a monitor event: [16-bit event id + 32-bit value, endpoint]; parsed here because
            # zmq.utils.monitor pulls in asyncio and ssl (5 MB of resident memory)
            event, value = struct.unpack_from("=HI", self._monitor.recv_multipart()[0])
            if event == zmq.EVENT_ACCEPT_FAILED:
                reason = zmq.strerror(value)
                self._problem("accept_failures", f"publish {self.address}: a connection was refused ({reason})")
            else:
                self.subscribers += 1 if event == zmq.EVENT_ACCEPTED else -1

    @property
    def subscriptions(self) -> int:
        return sum(self._topics.values())

    def _take_subscription(self, message: bytes) -> None:
        """Apply a subscription (b"\\x01topic") within the limits, or forget one (b"\\x00topic")."""
        if not message:
            return
        topic = message[1:]
        if message[0] == 0:
            if self._topics.get(topic):
                self._topics[topic] -= 1
                if not self._topics[topic]:
                    del self._topics[topic]
                self._socket.setsockopt(zmq.UNSUBSCRIBE, topic)  # a no-op where the subscriber is gone
        elif len(topic) > MAX_TOPIC:
            self._problem("subscriptions_refused", f"publish: a subscription of {len(topic)} bytes refused")
        elif self.subscriptions >= self._max_subscriptions:
            self._problem(
                "subscriptions_refused", f"publish: {self._max_subscriptions} subscriptions are live; one more refused"
            )
        else:
            self._socket.setsockopt(zmq.SUBSCRIBE, topic)  # applies to the subscriber that sent it
            self._topics[topic] = self._topics.get(topic, 0) + 1

    def wait_for_subscriber(self, seconds: float) -> bool:
        """Block until a first subscription arrives (or `seconds` pass)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self._socket.poll(int(left * 1000)):
                self._take_subscription(self._socket.recv())
                return True
        return False

    def close(self) -> None:
        self._socket.disable_monitor()
        self._monitor.close(linger=0)
        self._socket.close()
