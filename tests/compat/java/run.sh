#!/usr/bin/env bash
# Java (kafka-clients 4.x) compat run; see ../README.md for BOOTSTRAP/TOPIC/MODE/RECORDS.
# Never downloads: needs tests/compat/setup.sh (or ./setup.sh) to have built the cache.
set -euo pipefail
LIB="${SKIFF_CACHE:-$HOME/.cache/skiff}/compat/java/lib"
if [[ ! -f "$LIB/compat-java.jar" ]]; then
  echo "compat java: not built ($LIB missing); run tests/compat/setup.sh" >&2
  exit 2
fi
JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"
# The program has its own 240 s watchdog; timeout(1) is only a backstop.
exec timeout -k 5 250 "$JAVA" -Xmx512m -Xss1m -XX:+UseSerialGC \
  -Dorg.slf4j.simpleLogger.defaultLogLevel="${COMPAT_LOG_LEVEL:-warn}" \
  -Dorg.slf4j.simpleLogger.logFile=System.err \
  -cp "$LIB/*" dev.skiff.compat.Compat
