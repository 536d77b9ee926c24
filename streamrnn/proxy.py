"""`streamrnn proxy`: one event address for several services. ZeroMQ's own XSUB/XPUB proxy
connects to each service's event socket and binds one for subscribers, passing their
subscriptions up and every event down; events say which service sent them (`instance`), and
`seq` counts per instance, so gaps stay meaningful."""

from __future__ import annotations

import zmq

from streamrnn.addresses import address_problem, is_loopback
from streamrnn.service.publisher import bind


class ProxyError(ValueError):
    """An address the proxy cannot use; the message names it."""


def proxy(upstream: list[str], publish: str, insecure: bool = False) -> None:
    """Relay the events of the services at `upstream` on `publish` until interrupted."""
    for flag, address in [("--connect", a) for a in upstream] + [("--publish", publish)]:
        if problem := address_problem(address):
            raise ProxyError(f"{flag} {address} {problem}")
    if not (insecure or is_loopback(publish)):
        raise ProxyError(f"--publish {publish} is reachable from other machines (no CURVE here): give --insecure")
    context: zmq.Context = zmq.Context.instance()
    services, subscribers = context.socket(zmq.XSUB), context.socket(zmq.XPUB)
    for address in upstream:
        services.connect(address)
    bind(subscribers, publish, "--publish")
    try:
        zmq.proxy(services, subscribers)
    except zmq.ContextTerminated:
        pass
    finally:
        services.close(linger=0)
        subscribers.close(linger=0)
