"""The `streamrnn` command's entry point (the console script and `python -m streamrnn`).

A service (`serve`, `wyoming`) takes over its signals here, before anything heavy loads (the
command line parser alone imports pyzmq), so a SIGTERM or SIGHUP from about 30 ms after the
process starts is kept and acted on; before that the interpreter itself is still starting."""

from __future__ import annotations

import sys


def main() -> int:
    argv = sys.argv[1:]
    early = None
    if argv[:1] in (["serve"], ["wyoming"]) and "--check" not in argv:
        from streamrnn.service.signals import EarlySignals

        early = EarlySignals()
    from streamrnn.cli import main as run

    return run(argv, early)


if __name__ == "__main__":
    sys.exit(main())
