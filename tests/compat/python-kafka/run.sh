#!/usr/bin/env bash
# Runs the compat scenario with kafka-python. Needs setup.sh to have run; never downloads.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${SKIFF_CACHE:-$HOME/.cache/skiff}/compat/python-kafka/venv"
if [ ! -x "$venv/bin/python" ]; then
  echo "[python-kafka] FAIL: venv missing at $venv; run tests/compat/python-kafka/setup.sh" >&2
  exit 1
fi
# The program has its own 240 s watchdog; this is a backstop in case it hangs in native code.
exec timeout -k 5 250 "$venv/bin/python" -u "$here/compat.py"
