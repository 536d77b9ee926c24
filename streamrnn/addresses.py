"""Addresses as the service and its clients take them: ZeroMQ's tcp://HOST:PORT or ipc://PATH,
and plain HOST:PORT for HTTP (metrics, the review page)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


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
