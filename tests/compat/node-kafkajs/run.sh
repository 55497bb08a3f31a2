#!/usr/bin/env bash
# Runs the compat scenario with kafkajs. Needs setup.sh to have run; never downloads.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="${SKIFF_CACHE:-$HOME/.cache/skiff}/compat/node-kafkajs"
if [ ! -d "$dir/node_modules/kafkajs" ]; then
  echo "[node-kafkajs] FAIL: dependencies missing at $dir; run tests/compat/node-kafkajs/setup.sh" >&2
  exit 1
fi
# The program has its own 240 s watchdog; this is a backstop.
NODE_PATH="$dir/node_modules" exec timeout -k 5 250 node "$here/compat.js"
