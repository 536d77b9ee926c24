"""Resident memory the service does not use: the read-only pages of its shared libraries that
start-up read once (onnxruntime's alone is about 20 MB of them) are handed back to the kernel.

They are clean file pages, which the kernel drops anyway when memory runs short; `MADV_PAGEOUT`
(Linux 5.4) drops them now, and the few that serving uses come back on their first touch, so
resident memory shows what the service needs. Where the call is refused (an older kernel, a
system call filter), nothing changes.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

MADV_PAGEOUT = 21


def release_unused_library_pages() -> int:
    """Advise the kernel to page out every read-only file mapping of this process; returns how
    many it took (0 where it takes none)."""
    maps = Path("/proc/self/maps")
    if not maps.is_file():
        return 0
    libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols: libc is loaded (no ldconfig search)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    taken = 0
    for line in maps.read_text().splitlines():
        fields = line.split()
        if len(fields) < 6 or not fields[5].startswith("/") or "w" in fields[1]:
            continue  # anonymous, or writable: memory the process made, not pages of a file
        start, end = (int(x, 16) for x in fields[0].split("-"))
        taken += libc.madvise(start, end - start, MADV_PAGEOUT) == 0
    return taken
