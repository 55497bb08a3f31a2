#!/usr/bin/env bash
# Validates deploy/ statically, without a Docker engine; part of scripts/test.sh, next to
# deploy/test-stack.sh, which runs the stack on a real engine. It covers what that run cannot:
# the published Dockerfile (needs a registry), SKIFF_HOST_IP, planted defects. deploy/README.md
# lists what each proves.
#
#   deploy/validate.sh
#
# It builds deploy/check (Go: Docker Compose's loader compose-go, BuildKit's Dockerfile parser
# and linter) once into $SKIFF_CACHE, runs that checker's own tests (planted defects must be
# caught), then checks the Dockerfile, docker-compose.yml, dev.env and healthcheck.sh. The
# flag checks and a probe of a real `skiff dev` use the built binary; they are skipped, and say
# so, only when it is missing:
#   SKIFF_BIN         default $CARGO_TARGET_DIR/debug/skiff, else target/debug/skiff or
#                     $SKIFF_CACHE/target/debug/skiff, whichever exists
#   SKIFF_CACHE       default ~/.cache/skiff (the checker binary; Go's module and build caches
#                     are Go's own)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
SKIFF_CACHE="${SKIFF_CACHE:-$HOME/.cache/skiff}"
started=$SECONDS

command -v go >/dev/null 2>&1 || { echo "validate: Go is required to build deploy/check (see README)" >&2; exit 1; }
# Modules come from the Go module proxy; never download a different toolchain.
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0

# The checker is rebuilt only when its sources change.
hash="$(cat deploy/check/go.mod deploy/check/go.sum deploy/check/*.go | sha256sum | cut -c1-16)"
checker="$SKIFF_CACHE/deploy-check/check-$hash"
if [ ! -x "$checker" ]; then
  echo "building deploy/check (first run downloads compose-go and buildkit from the Go module proxy) ..."
  mkdir -p "$SKIFF_CACHE/deploy-check"
  rm -f "$SKIFF_CACHE"/deploy-check/check-*
  (cd deploy/check && go build -trimpath -o "$checker.tmp" .)
  mv "$checker.tmp" "$checker"
fi

echo "--- the checker's own tests: each planted defect must be caught"
(cd deploy/check && go test .)

bin="${SKIFF_BIN:-}"
if [ -z "$bin" ]; then
  if [ -n "${CARGO_TARGET_DIR:-}" ]; then
    bin="$CARGO_TARGET_DIR/debug/skiff"
  elif [ -x target/debug/skiff ]; then
    bin="$here/target/debug/skiff"
  else
    bin="$SKIFF_CACHE/target/debug/skiff"
  fi
fi

echo "--- deploy/ (skiff binary: $bin)"
status=0
"$checker" -repo "$here" -skiff "$bin" || status=$?
echo "validate: $((SECONDS - started)) s"
exit "$status"
