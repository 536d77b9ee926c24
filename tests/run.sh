#!/usr/bin/env bash
# The test command (README; CI runs exactly this): installs what the tests need, then runs them.
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian packages: PortAudio for the microphone tests; espeak-ng, flite, SVOX pico, RHVoice,
# festival and mbrola voices for synthetic speech (pico and RHVoice are in Debian's non-free
# section and mbrola's voices in contrib, added beside the system's own sources). Those tests
# skip, saying why, where the packages cannot be installed.
need=()
ldconfig -p | grep -q libportaudio.so.2 || need+=(libportaudio2)
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v flite >/dev/null || need+=(flite)
command -v pico2wave >/dev/null || need+=(libttspico-utils)
command -v RHVoice-test >/dev/null || need+=(rhvoice rhvoice-english)
command -v text2wave >/dev/null || need+=(festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts)
command -v mbrola >/dev/null || need+=(mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1)
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "tests/run.sh: installing Debian packages: ${need[*]}"
    debian=/etc/apt/sources.list.d/debian.sources
    extra=/etc/apt/sources.list.d/streamrnn-contrib-non-free.sources
    if [ -f "$debian" ] && [ ! -f "$extra" ] && ! grep -q non-free "$debian"; then
        sed 's/^Components:.*/Components: contrib non-free/' "$debian" > "$extra"
    fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
echo "tests/run.sh: installing the package with its training and test extras into .venv (about a minute)"
python3 -m venv .venv
.venv/bin/pip install -q -e '.[train,test]'
# the bench's yardstick, Porcupine 1.9.5 (the last that runs without an access key); --no-deps
# leaves out enum34, a backport for Python 2 that it still names
.venv/bin/pip install -q --no-deps pvporcupine==1.9.5
# lint, format and types (rules in pyproject.toml): CI fails on any of them
echo "tests/run.sh: ruff, ruff format, mypy"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
bash tests/mypy.sh
echo "tests/run.sh: pytest (skipped tests say why at the end)"
exec .venv/bin/python -m pytest -rs "$@"
