#!/usr/bin/env bash
# Keep a bench Kafka broker alive for a shared dev machine: restarts it when its process is gone.
#   bench/kafka/supervise.sh PORT DATA_DIR [READY_FILE]
# READY_FILE (e.g. /tmp/kafka-ready) holds "127.0.0.1:PORT" while the broker is up.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PORT="$1"; DATA_DIR="${2%/}"; READY="${3:-}"
PIDFILE="$DATA_DIR.conf/kafka.pid"
while true; do
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  if [[ -z "$pid" ]] || ! kill -0 "$pid" 2>/dev/null; then
    [[ -n "$READY" ]] && rm -f "$READY"
    echo "supervise: $(date -Is) broker on $PORT not running; starting" >&2
    if "$HERE/start-background.sh" "$PORT" "$DATA_DIR" "$DATA_DIR.log" >/dev/null; then
      [[ -n "$READY" ]] && echo "127.0.0.1:$PORT" > "$READY"
    else
      sleep 10
    fi
  fi
  sleep 5
done
