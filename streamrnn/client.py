"""Subscribing to the service's events: `for event in subscribe(address, topics=...)`.

ZeroMQ redials a lost connection by itself; if nothing at all arrives for `silence` seconds
(heartbeats included, which are always listened for) the socket is made anew. Events come as
typed records (`streamrnn.wire`); a message that is not one is counted in `bad_messages`, logged
and skipped. A subscription to every topic also counts in `missed` the events it lost (the gaps
in the publisher's `seq`: a subscriber that fell behind its queue of `send_hwm` events).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence

import zmq

from streamrnn.addresses import DEFAULT_PUBLISH, for_address
from streamrnn.keys import ClientKeys
from streamrnn.wire import BadEvent, Event, decode

log = logging.getLogger(__name__)


class RefusedError(ValueError):
    """The service turned this client's CURVE key away."""


class Subscription:
    """A SUB socket on the service's events, filtered by topic prefixes."""

    def __init__(
        self,
        address: str = DEFAULT_PUBLISH,
        topics: Sequence[str] = ("",),
        silence: float = 30.0,
        keys: ClientKeys | None = None,
    ):
        self.address, self.silence, self.keys = address, silence, keys
        self._wanted = tuple(t.encode() for t in topics)
        self._heard = time.monotonic()
        self.bad_messages = 0
        self.missed = 0
        self._last_seq: dict[str | None, int] = {}  # per publishing instance
        self._socket = self._open()

    def _open(self) -> zmq.Socket:
        socket: zmq.Socket = zmq.Context.instance().socket(zmq.SUB)
        socket.setsockopt(zmq.RECONNECT_IVL, 100)
        socket.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        if self.keys:
            self.keys.apply(socket)
        for topic in set(self._wanted) | {b"heartbeat"}:
            socket.setsockopt(zmq.SUBSCRIBE, topic)
        # with CURVE, a refused handshake is seen on a monitor socket (without, the client would wait for ever)
        self._monitor = socket.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH) if self.keys else None
        for_address(socket, self.address).connect(self.address)
        self._heard = time.monotonic()
        return socket

    def _wait(self, seconds: float) -> bool:
        """Whether an event is waiting within `seconds`; raises RefusedError if the service
        refuses this client's key."""
        if self._monitor is None:
            return bool(self._socket.poll(int(seconds * 1000)))
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        ready = dict(poller.poll(int(seconds * 1000)))
        if self._monitor in ready:
            raise RefusedError(
                f"{self.address}: the service refused this client's CURVE key (is its public key among the "
                "service's allowed clients?)"
            )
        return self._socket in ready

    def receive(self, timeout: float | None = None) -> Event | None:
        """The next wanted event, or None after `timeout` seconds (None: wait for ever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = self.silence if deadline is None else min(self.silence, deadline - time.monotonic())
            if wait <= 0:
                return None
            if not self._wait(wait):
                if time.monotonic() - self._heard >= self.silence:
                    self.close()  # a dead or restarted service: start afresh
                    self._socket = self._open()
                continue
            self._heard = time.monotonic()
            try:
                topic, event = decode(self._socket.recv_multipart())
            except BadEvent as exc:
                self.bad_messages += 1
                log.warning("%s: %s (%d bad so far)", self.address, exc, self.bad_messages)
                continue
            self._count_missed(event.instance, event.seq)
            if topic.encode().startswith(self._wanted):
                return event

    def _count_missed(self, instance: str | None, seq: int | None) -> None:
        if self._wanted != (b"",) or seq is None:
            return  # a filtered subscription cannot tell a lost event from one it did not ask for
        last = self._last_seq.get(instance)
        if last is not None and seq > last + 1:
            self.missed += seq - last - 1
            log.warning(
                "%s: %d event(s) of %s lost before seq %d (%d so far)",
                self.address,
                seq - last - 1,
                instance,
                seq,
                self.missed,
            )
        self._last_seq[instance] = seq  # a lower seq is a publisher that started again

    def close(self) -> None:
        if self._monitor is not None:
            self._socket.disable_monitor()
            self._monitor.close(linger=0)
        self._socket.close(linger=0)


def subscribe(
    address: str = DEFAULT_PUBLISH,
    topics: Sequence[str] = ("",),
    silence: float = 30.0,
    timeout: float | None = None,
    keys: ClientKeys | None = None,
) -> Iterator[Event]:
    """Yield events whose topic starts with one of `topics`; stop after `timeout`
    seconds without one (None: never). `keys` (ClientKeys.load) for a service with CURVE."""
    subscription = Subscription(address, topics, silence, keys)
    try:
        while (event := subscription.receive(timeout)) is not None:
            yield event
    finally:
        subscription.close()
