"""What the sources hand the loop, bounded in seconds of signal and bytes held.

Every source thread offers its messages here; the loop takes them a tick at a time. The samples
waiting are bounded twice: in seconds of signal (what scoring them will cost) and in bytes (what
holding them costs; a 384-kHz stream holds 24 times the bytes of a 16-kHz one per second). Each
source that runs until stopped (mic, ingest, Wyoming) may hold at most an equal share of both, so
one that floods cannot crowd out the others: what it offers past its share is refused, and the
caller counts it. Files and stdin together have one share more, and wait for room in it instead;
stream ends and states always get in (they hold no signal), so none of them is ever lost. The
loop takes at most `TICK_SIGNAL` seconds of signal per tick, so one tick's work stays short
whatever is waiting.
"""

from __future__ import annotations

import collections
import threading

from streamrnn.service.sources import Samples

FINITE = "files and stdin"  # the share all finite sources take together
TICK_SIGNAL = 60.0  # seconds of signal the loop takes per tick at most (about 30-150 ms of scoring)


def _size(message: object) -> tuple[float, int]:
    """(seconds of signal, bytes) a message holds."""
    if isinstance(message, Samples):
        return len(message.samples) / message.rate, message.samples.nbytes
    return 0.0, 0


class InputQueue:
    def __init__(self, live: list[str], finite: bool, max_seconds: float, max_bytes: int):
        """`live`: the names of the sources that run until stopped; `finite`: whether there are
        files or stdin too."""
        shares = max(1, len(live) + finite)
        self.share_seconds, self.share_bytes = max_seconds / shares, max_bytes // shares
        self._held: dict[str, list[float]] = {name: [0.0, 0] for name in [*live, FINITE]}
        self._seconds, self._bytes = 0.0, 0  # all sources together
        self._messages: collections.deque = collections.deque()
        self._changed = threading.Condition()

    def offer(self, source: str, message: object) -> bool:
        """A live source's samples, if its share has room for them; False (nothing taken) if not."""
        seconds, size = _size(message)
        with self._changed:
            if self._over(source, seconds, size):
                return False
            self._put(source, message, seconds, size)
            return True

    def put(self, message: object, stop: threading.Event, wait: float) -> None:
        """A message of a file or stdin, or one without signal, which must not be lost: samples
        wait while the files' share is full (checking `stop` every `wait` seconds; once stopping
        they are put anyway)."""
        seconds, size = _size(message)
        with self._changed:
            while seconds and self._over(FINITE, seconds, size) and not stop.is_set():
                self._changed.wait(wait)
            self._put(FINITE if seconds else "", message, seconds, size)

    def take(self, timeout: float, budget: float = TICK_SIGNAL) -> list:
        """The waiting messages in order, up to `budget` seconds of signal (at least one message);
        waits up to `timeout` for the first."""
        taken: list = []
        with self._changed:
            if not self._messages:
                self._changed.wait(timeout)
            signal = 0.0
            while self._messages and (not taken or signal < budget):
                share, message, seconds, size = self._messages.popleft()
                signal += seconds
                self._seconds -= seconds
                self._bytes -= size
                if share:
                    held = self._held[share]
                    held[0] -= seconds
                    held[1] -= size
                taken.append(message)
            self._changed.notify_all()
        return taken

    def held(self) -> tuple[float, int]:
        """(seconds of signal, bytes) waiting now."""
        with self._changed:
            return self._seconds, self._bytes

    def waiting(self) -> int:
        """Messages waiting now."""
        with self._changed:
            return len(self._messages)

    def _over(self, share: str, seconds: float, size: int) -> bool:
        """Whether a share would hold more than its part (one piece always fits an empty share)."""
        held = self._held[share]
        return bool(held[0]) and (held[0] + seconds > self.share_seconds or held[1] + size > self.share_bytes)

    def _put(self, share: str, message: object, seconds: float, size: int) -> None:
        if share:
            self._held[share][0] += seconds
            self._held[share][1] += size
        self._messages.append((share, message, seconds, size))
        self._seconds += seconds
        self._bytes += size
        self._changed.notify_all()
