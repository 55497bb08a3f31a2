#!/usr/bin/env bash
# Builds the go-sarama compat client into the cache (idempotent; Go's module and build caches make
# re-runs cheap). Needs Go >= 1.26 and the Go module proxy.
set -euo pipefail
cd "$(dirname "$0")"
out="${SKIFF_CACHE:-$HOME/.cache/skiff}/compat/go-sarama"
mkdir -p "$out"
GOFLAGS=-mod=mod go build -o "$out/client" .
echo "built $out/client"
