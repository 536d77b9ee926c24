"""`streamrnn proxy`: one event address for several services. ZeroMQ's own XSUB/XPUB proxy
connects to each service's event socket and binds one for subscribers, passing their
subscriptions up and every event down; events say which service sent them (`instance`), and
`seq` counts per instance, so gaps stay meaningful."""

from __future__ import annotations

import signal
import sys
import threading

import zmq

from streamrnn.addresses import address_problem, bind, for_address, is_loopback

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


class ProxyError(ValueError):
    """An address the proxy cannot use; the message names it."""


def proxy(upstream: list[str], publish: str, insecure: bool = False) -> None:
    """Relay the events of the services at `upstream` on `publish` until SIGTERM (then return) or
    SIGINT (then raise KeyboardInterrupt).

    The relay runs in a thread with both signals blocked and the main thread takes them with
    sigwait: a signal that arrives while ZeroMQ's proxy is busy relaying, not waiting in a system
    call, would otherwise be noted by Python and never acted on."""
    for flag, address in [("--connect", a) for a in upstream] + [("--publish", publish)]:
        if problem := address_problem(address):
            raise ProxyError(f"{flag} {address} {problem}")
    if not (insecure or is_loopback(publish)):
        raise ProxyError(f"--publish {publish} is reachable from other machines (no CURVE here): give --insecure")
    context: zmq.Context = zmq.Context.instance()
    services, subscribers = context.socket(zmq.XSUB), context.socket(zmq.XPUB)
    control, steer = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    control.bind("inproc://proxy-control")
    steer.connect("inproc://proxy-control")
    for address in upstream:
        for_address(services, address).connect(address)
    bind(subscribers, publish, "--publish")
    print(f"streamrnn proxy: relaying the events of {', '.join(upstream)} on {publish}", file=sys.stderr, flush=True)
    unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # the relay thread inherits the block
    relay = threading.Thread(target=zmq.proxy_steerable, args=(services, subscribers, None, control))
    relay.start()
    try:
        received = signal.sigwait(STOP_SIGNALS)
    finally:
        steer.send(b"TERMINATE")
        relay.join()
        for socket in (services, subscribers, control, steer):
            socket.close(linger=0)
        signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)
    if received == signal.SIGINT:
        raise KeyboardInterrupt
