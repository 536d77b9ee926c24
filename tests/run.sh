#!/usr/bin/env bash
# The test command (README; CI runs exactly this): installs what the tests need, then runs them.
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian packages: PortAudio for the microphone tests, espeak-ng and flite for synthetic speech
# (those tests skip, saying why, where the packages cannot be installed)
need=()
ldconfig -p | grep -q libportaudio.so.2 || need+=(libportaudio2)
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v flite >/dev/null || need+=(flite)
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
python3 -m venv .venv
.venv/bin/pip install -q -e '.[train,test]'
exec .venv/bin/python -m pytest "$@"
