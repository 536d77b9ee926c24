"""Signals that arrive before the service loop runs (imports and model loading take a while):
kept, never fatal, and handed to the loop, which acts on them once it runs."""

from __future__ import annotations

import signal

HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class EarlySignals:
    """Installed first thing by `streamrnn serve`: SIGTERM/SIGINT/SIGHUP are remembered, in order."""

    def __init__(self) -> None:
        self.received: list[int] = []
        for sig in HANDLED:
            signal.signal(sig, self._keep)

    def _keep(self, signum: int, frame: object) -> None:
        self.received.append(signum)
