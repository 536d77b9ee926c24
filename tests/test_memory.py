"""The service hands back the pages of files it mapped read-only and does not use
(streamrnn/service/memory.py): measured on a file only the child process maps, since pages that
another process maps too (pytest holds onnxruntime and numpy) stay resident by design."""

from __future__ import annotations

import subprocess
import sys

CHILD = """
import mmap, sys
from streamrnn.service.memory import release_unused_library_pages

def resident_mb():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) / 1024

with open(sys.argv[1], "rb") as f:
    mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
sum(mapped[i] for i in range(0, len(mapped), 4096))  # every page read: resident
before = resident_mb()
taken = release_unused_library_pages()
after = resident_mb()
mapped[0]  # a page used again comes back
print(before, after, taken)
"""


def test_read_only_pages_are_handed_back(tmp_path):
    data = tmp_path / "library.bin"
    data.write_bytes(bytes(range(256)) * (64 * 2**20 // 256))  # 64 MB
    done = subprocess.run([sys.executable, "-c", CHILD, str(data)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    before, after, taken = map(float, done.stdout.split())
    assert before - after > 60 and taken > 1, done.stdout
