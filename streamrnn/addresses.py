"""Addresses as the service and its clients take them: ZeroMQ's tcp://HOST:PORT or ipc://PATH
(the default event address, checking one, binding one), and plain HOST:PORT for HTTP (metrics,
the review page)."""

from __future__ import annotations

import ipaddress
import socket as pysocket
import time
from urllib.parse import urlsplit

import zmq

DEFAULT_PUBLISH = "tcp://127.0.0.1:5556"  # where the service publishes events unless told


def address_problem(address: str) -> str | None:
    """Why an address cannot be bound or connected to, or None (HOST may be * to bind)."""
    scheme, sep, rest = address.partition("://")
    if not sep or scheme not in ("tcp", "ipc"):
        return "is not a ZeroMQ address (tcp://HOST:PORT or ipc://PATH)"
    if scheme == "ipc":
        return None if rest else "names no path"
    host, colon, port = rest.rpartition(":")
    if not colon or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        return "needs a host and a port from 1 to 65535 (tcp://HOST:PORT)"
    return None


def host_port(address: str, what: str, example: str) -> tuple[str, int]:
    """HOST:PORT -> (host, port); a ValueError names `what` and the address, with `example`."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{what} {address!r} is not HOST:PORT (e.g. {example})")
    return host.strip("[]"), int(port)


def is_loopback(address: str) -> bool:
    """Whether an address reaches only this machine (ipc://, tcp to a loopback host)."""
    scheme, _, rest = address.partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    host = urlsplit(f"//{rest}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a wildcard (*), an interface name or a host name


class BindError(ValueError):
    """An address the service cannot bind; the message names it."""


def for_address(socket: zmq.Socket, address: str) -> zmq.Socket:
    """`socket` made ready for `address`: IPv6 on for an IPv6 host (tcp://[::1]:PORT), which
    ZeroMQ sockets refuse otherwise ("No such device")."""
    if "://[" in address:
        socket.setsockopt(zmq.IPV6, 1)
    return socket


def bind(socket: zmq.Socket, address: str, what: str, close: bool = False) -> None:
    """Bind `socket` (closed again if `close`, as `serve --check` does); an ipc:// path where a
    running service listens is refused, where libzmq would take it over silently."""
    for_address(socket, address)
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


def rebind(socket: zmq.Socket, address: str, what: str) -> None:
    """Unbind `socket` and bind it again: every connection made through it ends, and each peer
    reconnects (and is asked for its key again). libzmq closes the old listener in its own
    thread, so an ipc:// path is bound again once that listener is gone (within a second)."""
    socket.unbind(address)
    deadline = time.monotonic() + 1.0
    while address.startswith("ipc://") and _listening(address[len("ipc://") :]) and time.monotonic() < deadline:
        time.sleep(0.01)
    bind(socket, address, what)


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
