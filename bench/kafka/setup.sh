#!/usr/bin/env bash
# Resolve an Apache Kafka broker (+ kafka-tools, log4j2 binding) from Maven Central into
#   ${SKIFF_CACHE:-$HOME/.cache/skiff}/kafka/<version>/libs
# Idempotent: returns immediately when the libs dir is complete. Prints the libs dir on stdout.
# Usage: bench/kafka/setup.sh [VERSION]   (default: KAFKA_VERSION env or the pom's version)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DEFAULT_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$HERE/pom.xml")"
VERSION="${1:-${KAFKA_VERSION:-$DEFAULT_VERSION}}"
CACHE="${SKIFF_CACHE:-$HOME/.cache/skiff}"
LIBS="$CACHE/kafka/$VERSION/libs"
STAMP="$CACHE/kafka/$VERSION/.complete"

if [[ -f "$STAMP" && -f "$LIBS/kafka_2.13-$VERSION.jar" && -f "$LIBS/kafka-tools-$VERSION.jar" ]]; then
  echo "$LIBS"
  exit 0
fi

command -v mvn >/dev/null || { echo "setup: mvn not found (apt-get install maven)" >&2; exit 1; }
tmp="$LIBS.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
echo "setup: resolving org.apache.kafka:kafka_2.13:$VERSION + kafka-tools from Maven Central into $LIBS" >&2
mvn -B -q -Dstyle.color=never -f "$HERE/pom.xml" -Dkafka.version="$VERSION" \
  dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" >&2
[[ -f "$tmp/kafka_2.13-$VERSION.jar" ]] || { echo "setup: kafka_2.13-$VERSION.jar missing after resolve" >&2; exit 1; }
rm -rf "$LIBS"
mv "$tmp" "$LIBS"
touch "$STAMP"
echo "$LIBS"
