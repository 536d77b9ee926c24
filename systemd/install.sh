#!/bin/sh
# Install streamrnn as a system service on Debian or Ubuntu, from a clone (run as root, from the
# clone's top folder): a virtual environment under /opt/streamrnn (Debian 12 refuses `pip install`
# into the system Python), the units (which run /opt/streamrnn/bin/streamrnn), the example configs
# in /etc/streamrnn (existing ones are kept) and /var/lib/streamrnn/models for installed models
# (`streamrnn install-model --service`). Then: systemctl enable --now streamrnn (or streamrnn@wyoming).
#
# PREFIX, ETC, UNITS and STATE move it elsewhere (the tests install under a temporary folder);
# EXTRAS picks the optional parts (default wyoming,metrics).
set -eu
PREFIX=${PREFIX:-/opt/streamrnn}
ETC=${ETC:-/etc/streamrnn}
UNITS=${UNITS:-/etc/systemd/system}
STATE=${STATE:-/var/lib/streamrnn}
EXTRAS=${EXTRAS:-wyoming,metrics}
SRC=$(cd "$(dirname "$0")/.." && pwd)

python3 -m venv "$PREFIX"
"$PREFIX/bin/pip" install --quiet "$SRC${EXTRAS:+[$EXTRAS]}"
install -d -m 755 "$ETC" "$UNITS" "$STATE/models"
for config in streamrnn.toml wyoming.toml; do
    [ -e "$ETC/$config" ] || install -m 644 "$SRC/systemd/$config" "$ETC/$config"
done
for unit in streamrnn.service streamrnn@.service; do
    sed "s|/opt/streamrnn/bin/streamrnn|$PREFIX/bin/streamrnn|; s|/etc/streamrnn/|$ETC/|" \
        "$SRC/systemd/$unit" > "$UNITS/$unit"
    chmod 644 "$UNITS/$unit"
done
if [ -d /run/systemd/system ] && [ "$UNITS" = /etc/systemd/system ]; then
    systemctl daemon-reload
fi
echo "installed streamrnn in $PREFIX; units in $UNITS, configs in $ETC, models in $STATE/models"
