#!/usr/bin/env bash
# Build the Java compat program into ${SKIFF_CACHE:-$HOME/.cache/skiff}/compat/java/
#   lib/*.jar  (kafka-clients + deps + compat-java.jar)
# Idempotent: skipped when the stamp (hash of pom.xml + sources) matches. Maven uses ~/.m2.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${SKIFF_CACHE:-$HOME/.cache/skiff}/compat/java"
STAMP="$OUT/.stamp"
hash="$(cd "$HERE" && find pom.xml src -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$hash" && -f "$OUT/lib/compat-java.jar" ]]; then
  echo "java: up to date ($OUT)"
  exit 0
fi
command -v mvn >/dev/null || { echo "java: mvn not found (apt-get install maven)" >&2; exit 1; }
command -v java >/dev/null || { echo "java: java not found" >&2; exit 1; }
echo "java: building into $OUT"
build="$OUT/build"
rm -rf "$build" "$OUT/lib.tmp"
mkdir -p "$OUT"
mvn -B -q -Dstyle.color=never -f "$HERE/pom.xml" -Dcompat.build.dir="$build" \
  package dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$OUT/lib.tmp"
cp "$build/compat-java.jar" "$OUT/lib.tmp/"
rm -rf "$OUT/lib" "$build"
mv "$OUT/lib.tmp" "$OUT/lib"
echo "$hash" > "$STAMP"
echo "java: built ($(ls "$OUT/lib" | wc -l) jars)"
