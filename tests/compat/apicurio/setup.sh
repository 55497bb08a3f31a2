#!/usr/bin/env bash
# Apicurio Registry (a schema registry whose KafkaSQL storage keeps everything in a Kafka topic)
# for tests/registry.rs, from Maven Central only: the project publishes the app's ready-to-run
# Quarkus distribution as io.apicurio:apicurio-registry-app:<version>:tar.gz:all. (Its plain jar
# cannot be rebuilt into an app here: several modules it depends on, e.g.
# apicurio-registry-schema-util-provider and -config-index, are not on Maven Central.)
#
# Unpacks it into ${SKIFF_CACHE:-$HOME/.cache/skiff}/apicurio/<version>/ (quarkus-run.jar, lib/,
# app/) and finds a Java >= 21 (the app is built for 21; the default JDK here is 17): $APICURIO_JAVA,
# else java on PATH or $JAVA_HOME if new enough, else the newest /usr/lib/jvm/* that is.
# Idempotent. Prints two lines on stdout, `dir: <unpacked dir>` and `java: <java binary>`.
# Usage: tests/compat/apicurio/setup.sh [VERSION]   (default: APICURIO_VERSION or 3.3.3)
set -euo pipefail
VERSION="${1:-${APICURIO_VERSION:-3.3.3}}"
CACHE="${SKIFF_CACHE:-$HOME/.cache/skiff}"
DIR="$CACHE/apicurio/$VERSION"
STAMP="$DIR/.complete"

java_major() { # prints the major version of the java binary $1, or 0
  local v
  v="$("$1" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = \([0-9]*\).*/\1/p' | head -1 || true)"
  echo "${v:-0}"
}
find_java() {
  local c
  for c in "${APICURIO_JAVA:-}" "$(command -v java || true)" "${JAVA_HOME:+$JAVA_HOME/bin/java}" \
           $(ls -d /usr/lib/jvm/*/bin/java 2>/dev/null | sort -rV); do
    [[ -n "$c" && -x "$c" ]] || continue
    if (( $(java_major "$c") >= 21 )); then echo "$c"; return 0; fi
  done
  return 1
}
JAVA="$(find_java)" || {
  echo "apicurio: no Java >= 21 found (set APICURIO_JAVA, or install one, e.g. a Temurin 21/25 JDK under /usr/lib/jvm)" >&2
  exit 1
}

if [[ ! -f "$STAMP" || ! -f "$DIR/quarkus-run.jar" ]]; then
  command -v mvn >/dev/null || { echo "apicurio: mvn not found (apt-get install maven)" >&2; exit 1; }
  artifact="io.apicurio:apicurio-registry-app:$VERSION:tar.gz:all"
  echo "apicurio: resolving $artifact from Maven Central" >&2
  tmp="$DIR.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  mvn -B -q -Dstyle.color=never org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
    -Dartifact="$artifact" -DoutputDirectory="$tmp" >&2
  tarball="$tmp/apicurio-registry-app-$VERSION-all.tar.gz"
  [[ -f "$tarball" ]] || { echo "apicurio: $tarball missing after resolve" >&2; exit 1; }
  tar -xzf "$tarball" -C "$tmp"
  rm -f "$tarball"
  [[ -f "$tmp/quarkus-run.jar" ]] || { echo "apicurio: no quarkus-run.jar in $artifact" >&2; exit 1; }
  rm -rf "$DIR"
  mv "$tmp" "$DIR"
  touch "$STAMP"
fi
echo "dir: $DIR"
echo "java: $JAVA"
