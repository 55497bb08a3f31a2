#!/usr/bin/env bash
# Installs every client family's dependencies into ${SKIFF_CACHE:-$HOME/.cache/skiff}/compat/
# by running each <client>/setup.sh (each is idempotent). Pass client names to limit the set.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ "$#" -gt 0 ]; then clients=("$@"); else
  clients=()
  for s in "$here"/*/setup.sh; do clients+=("$(basename "$(dirname "$s")")"); done
fi
for c in "${clients[@]}"; do
  echo "== compat setup: $c"
  bash "$here/$c/setup.sh"
done
