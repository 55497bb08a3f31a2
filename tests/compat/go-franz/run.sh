#!/usr/bin/env bash
# Runs the go-franz compat scenario (see ../README.md). Env: BOOTSTRAP, TOPIC, MODE, RECORDS.
# Never downloads: build first with ./setup.sh.
set -euo pipefail
bin="${SKIFF_CACHE:-$HOME/.cache/skiff}/compat/go-franz/client"
if [[ ! -x "$bin" ]]; then
  echo "compat go-franz FAILED: $bin not built; run tests/compat/go-franz/setup.sh first" >&2
  exit 2
fi
exec "$bin"
