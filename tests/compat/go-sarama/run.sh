#!/usr/bin/env bash
# Runs the go-sarama compat scenario (see ../README.md). Env: BOOTSTRAP, TOPIC, MODE, RECORDS.
# Never downloads: build first with ./setup.sh.
set -euo pipefail
bin="${SKIFF_CACHE:-$HOME/.cache/skiff}/compat/go-sarama/client"
if [[ ! -x "$bin" ]]; then
  echo "compat go-sarama FAILED: $bin not built; run tests/compat/go-sarama/setup.sh first" >&2
  exit 2
fi
exec "$bin"
