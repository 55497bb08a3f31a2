#!/usr/bin/env bash
# Installs kafka-python and its codec libraries into a cached venv. Idempotent.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${SKIFF_CACHE:-$HOME/.cache/skiff}/compat/python-kafka/venv"
stamp="$venv/.requirements.txt"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && cmp -s "$here/requirements.txt" "$stamp"; then
  echo "python-kafka: venv up to date ($venv)"
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --disable-pip-version-check -q -r "$here/requirements.txt"
"$venv/bin/python" -c 'import kafka, kafka.codec as c; assert c.has_snappy() and c.has_lz4() and c.has_zstd(), "codec libs missing"; print("python-kafka: kafka-python", kafka.__version__, "with snappy, lz4, zstd")'
cp "$here/requirements.txt" "$stamp"
