#!/usr/bin/env bash
# The test command (README; CI runs exactly this): installs what the tests need, then runs them.
set -euo pipefail
cd "$(dirname "$0")/.."
# PortAudio for the microphone tests (they skip, saying why, where it cannot be installed)
if ! ldconfig -p | grep -q libportaudio.so.2 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq libportaudio2 >/dev/null
fi
python3 -m venv .venv
.venv/bin/pip install -q -e '.[train,test]'
exec .venv/bin/python -m pytest "$@"
