"""What the service counts and drops: one counter per kind of problem, from any thread, logged
with a rate limit so a flood of one kind costs a log line every PROBLEM_LOG_EVERY seconds."""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("streamrnn")

PROBLEM_LOG_EVERY = 10.0  # seconds between log lines about the same kind of problem


class Problems:
    """Counters of problems by kind; `counts()` is a consistent copy."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._logged: dict[str, float] = {}
        self._lock = threading.Lock()  # counted from source threads too

    def count(self, counter: str, message: str) -> None:
        """Count one dropped or failed thing; log the first of each kind and then at most one
        every PROBLEM_LOG_EVERY seconds."""
        with self._lock:
            count = self._counts[counter] = self._counts.get(counter, 0) + 1
            now = time.monotonic()
            loud = now - self._logged.get(counter, -PROBLEM_LOG_EVERY) >= PROBLEM_LOG_EVERY
            if loud:
                self._logged[counter] = now
        if loud:
            log.warning("%s (%s: %d so far)", message, counter, count)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)
