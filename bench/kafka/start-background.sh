#!/usr/bin/env bash
# Start bench/kafka/run-kafka.sh PORT DATA_DIR in the background, wait until clients can connect.
#   bench/kafka/start-background.sh PORT DATA_DIR [LOG_FILE]
# Prints the broker's pid; the pid is also written to DATA_DIR.conf/kafka.pid.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PORT="$1"; DATA_DIR="$2"; LOG="${3:-${DATA_DIR%/}.log}"
"$HERE/setup.sh" >/dev/null
nohup setsid "$HERE/run-kafka.sh" "$PORT" "$DATA_DIR" >"$LOG" 2>&1 < /dev/null &
pid=$!
mkdir -p "${DATA_DIR%/}.conf"; echo "$pid" > "${DATA_DIR%/}.conf/kafka.pid"
if ! "$HERE/wait-ready.sh" "127.0.0.1:$PORT" "${KAFKA_READY_TIMEOUT:-120}"; then
  echo "start-background: broker not ready; last log lines:" >&2; tail -30 "$LOG" >&2
  kill "$pid" 2>/dev/null || true
  exit 1
fi
echo "$pid"
