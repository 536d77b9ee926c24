"""A `streamrnn serve` subprocess driven from outside, as systemd would run it: the one harness
that the bench, the demo and the tests start the service with.

It owns an sd_notify socket (so it sees READY, WATCHDOG, STOPPING as systemd does) and keeps the
service's log in a file (a full pipe would stall the service), or on this terminal.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


class ServeProcess:
    """`streamrnn serve ARGS` in `folder` (which holds its notify socket and log)."""

    def __init__(
        self,
        folder: str | Path,
        args: list[str],
        *,
        stdin=None,
        env: dict | None = None,
        log_to_terminal: bool = False,
        cwd: str | Path | None = None,
        python: list[str] | None = None,  # the interpreter's command line (default: this one)
    ):
        folder = Path(folder)
        self.notify_path = str(folder / "notify")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        self.notices: list[str] = []  # every sd_notify line received, in order
        self.log = None if log_to_terminal else open(folder / "service.log", "w+b")
        self.spawned = time.time()
        self.process = subprocess.Popen(
            [*(python or [sys.executable]), "-m", "streamrnn", "serve", *args],
            env={**(env if env is not None else os.environ), "NOTIFY_SOCKET": self.notify_path},
            stdin=stdin,
            stderr=self.log,
            cwd=cwd,
        )

    def wait_notice(self, wanted: str, timeout: float = 60.0) -> float:
        """Wall time when the sd_notify line `wanted` (e.g. READY=1) has been seen (now, if it was
        seen before)."""
        deadline = time.monotonic() + timeout
        while wanted not in self.notices:
            if not self._receive(deadline):
                raise RuntimeError(f"service sent no {wanted} in {timeout:g} s: {self.log_text()[-500:]}")
        return time.time()

    def listen(self, seconds: float) -> list[str]:
        """The sd_notify lines the service sends in the next `seconds`."""
        deadline, start = time.monotonic() + seconds, len(self.notices)
        while self._receive(deadline):
            pass
        return self.notices[start:]

    def _receive(self, deadline: float) -> bool:
        """Take in one notify message that comes before `deadline` (monotonic); False if none did."""
        self.notify.settimeout(max(0.001, deadline - time.monotonic()))
        try:
            self.notices += self.notify.recv(4096).decode().split("\n")
        except TimeoutError:
            return False
        return True

    def log_text(self) -> str:
        if self.log is None:
            return ""
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS in /proc")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> tuple[int, float]:
        """Send `sig` (if it still runs) and wait: (exit status, seconds it took to exit)."""
        start = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout)
        return code, time.monotonic() - start

    def close(self) -> None:
        """Kill what still runs and let go of the socket and log."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.notify.close()
        if self.log is not None:
            self.log.close()
