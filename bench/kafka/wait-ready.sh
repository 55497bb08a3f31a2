#!/usr/bin/env bash
# Wait until a Kafka-protocol broker at BOOTSTRAP answers an Admin listTopics (via kafka-tools TopicCommand).
#   bench/kafka/wait-ready.sh BOOTSTRAP [TIMEOUT_SECONDS=90]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BOOTSTRAP="$1"; TIMEOUT="${2:-90}"
LIBS="$("$HERE/setup.sh")"
JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"
deadline=$((SECONDS + TIMEOUT))
while (( SECONDS < deadline )); do
  if timeout 30 "$JAVA" -Xmx128m -XX:TieredStopAtLevel=1 -Dlog4j2.configurationFile="$HERE/log4j2-tools.properties" \
       -cp "$LIBS/*" org.apache.kafka.tools.TopicCommand \
       --bootstrap-server "$BOOTSTRAP" --list >/dev/null 2>&1; then
    echo "wait-ready: $BOOTSTRAP is up" >&2
    exit 0
  fi
  sleep 1
done
echo "wait-ready: $BOOTSTRAP not ready after ${TIMEOUT}s" >&2
exit 1
