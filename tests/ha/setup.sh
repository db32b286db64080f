#!/bin/sh
# Creates the Python 3.13 virtualenv with Home Assistant 2025.4 that the end-to-end test
# (tests/homeassistant_e2e.rs, `cargo test --test homeassistant_e2e -- --ignored`) runs.
# Takes about 4 minutes from PyPI.
#
#   tests/ha/setup.sh [VENV]        # default: target/ha-venv
#
# HA 2025.4 needs Python 3.13: taken from pyenv (~/.pyenv/versions/3.13.*) or
# $PVBUS_HA_PYTHON. Besides `homeassistant`, it installs what HA's MQTT integration and
# its always-loaded integrations import (HA would otherwise pip-install them at start).
set -eu
VENV=${1:-target/ha-venv}
PY=${PVBUS_HA_PYTHON:-$(ls -d "$HOME"/.pyenv/versions/3.13.*/bin/python 2>/dev/null | tail -n 1)}
if [ -z "$PY" ] || [ ! -x "$PY" ]; then
    echo "no Python 3.13 found: install it (pyenv install 3.13) or set PVBUS_HA_PYTHON" >&2
    exit 1
fi
start=$(date +%s)
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check \
    homeassistant==2025.4.4 \
    home-assistant-frontend==20250411.0 \
    paho-mqtt==2.1.0 \
    cronsim==2.6 securetar==2025.2.1 psutil-home-assistant==0.0.1 ifaddr==0.2.0
echo "Home Assistant installed in $VENV in $(( $(date +%s) - start )) s"
