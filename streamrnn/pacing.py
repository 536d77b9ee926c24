"""Real-time pacing: hand a signal over piece by piece, each when its last sample would have
been heard (used by `streamrnn send`, the file source and the bench)."""

from __future__ import annotations

import threading
import time


class Pacer:
    """Keeps a clock of signal seconds handed over against the monotonic clock."""

    def __init__(self, stop: threading.Event | None = None):
        self._start = time.monotonic()
        self._seconds = 0.0
        self._stop = stop

    def wait(self, seconds: float) -> bool:
        """Count `seconds` more of signal and sleep until they have been heard; False when the
        stop event is set meanwhile."""
        self._seconds += seconds
        delay = self._start + self._seconds - time.monotonic()
        if self._stop is not None:
            return not self._stop.wait(max(0.0, delay))
        time.sleep(max(0.0, delay))
        return True
