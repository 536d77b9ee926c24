"""systemd's sd_notify protocol: datagrams to $NOTIFY_SOCKET (READY, WATCHDOG, STATUS, STOPPING).

Does nothing when not started by systemd (no NOTIFY_SOCKET).
"""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self):
        address = os.environ.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) if address else None
        if self._socket is not None:
            self._socket.setblocking(False)  # a reader that stopped reading must never stall the loop
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        pid = os.environ.get("WATCHDOG_PID")
        # ping at half the watchdog period, as sd_watchdog_enabled(3) advises
        self.watchdog_interval = usec / 2e6 if usec and (not pid or int(pid) == os.getpid()) else 0.0

    def send(self, *fields: str) -> None:
        if self._socket is not None:
            try:
                self._socket.sendto("\n".join(fields).encode(), self._address)
            except OSError:
                pass  # systemd gone or its queue full: nothing to tell it then

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
