#!/usr/bin/env bash
# Resolve Kafka Connect (connect-runtime + connect-file, see pom.xml for the version) from Maven
# Central into ${SKIFF_CACHE:-$HOME/.cache/skiff}/compat/connect/lib (Maven's repo: ~/.m2).
# Idempotent: skipped when the stamp (hash of pom.xml) matches.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${SKIFF_CACHE:-$HOME/.cache/skiff}/compat/connect"
STAMP="$OUT/.stamp"
hash="$(sha256sum "$HERE/pom.xml" | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$hash" && -d "$OUT/lib" ]]; then
  echo "connect: up to date ($OUT)"
  exit 0
fi
command -v mvn >/dev/null || { echo "connect: mvn not found (apt-get install maven)" >&2; exit 1; }
echo "connect: resolving into $OUT"
rm -rf "$OUT/lib.tmp"
mkdir -p "$OUT"
# -C (strict checksums): a jar whose Maven Central checksum does not match fails the resolve.
mvn -B -q -C -Dstyle.color=never -f "$HERE/pom.xml" \
  dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$OUT/lib.tmp"
compgen -G "$OUT/lib.tmp/connect-file-*.jar" >/dev/null || { echo "connect: connect-file missing after resolve" >&2; exit 1; }
rm -rf "$OUT/lib"
mv "$OUT/lib.tmp" "$OUT/lib"
echo "$hash" > "$STAMP"
echo "connect: resolved ($(ls "$OUT/lib" | wc -l) jars)"
