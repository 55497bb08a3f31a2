#!/usr/bin/env bash
# Installs confluent-kafka (wheel bundling librdkafka) into a cached venv. Idempotent.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${SKIFF_CACHE:-$HOME/.cache/skiff}/compat/python-confluent/venv"
stamp="$venv/.requirements.txt"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && cmp -s "$here/requirements.txt" "$stamp"; then
  echo "python-confluent: venv up to date ($venv)"
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --disable-pip-version-check -q -r "$here/requirements.txt"
"$venv/bin/python" -c 'import confluent_kafka as c; print("python-confluent: confluent-kafka", c.__version__, "librdkafka", c.libversion()[0])'
cp "$here/requirements.txt" "$stamp"
