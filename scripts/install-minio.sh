#!/usr/bin/env bash
# Installs the MinIO server binary the S3 tests (tests/minio.rs) start, unless one is already
# there: SKIFF_MINIO_BIN, `minio` on PATH, or $(go env GOPATH)/bin/minio. Builds it from source
# with `go install` (Go module proxy; about 3-4 minutes on a fresh machine, then cached in
# ~/go/bin). Prints the path of the binary.
set -euo pipefail

gobin="$(go env GOBIN 2>/dev/null || true)"
[ -n "$gobin" ] || gobin="$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin"

for candidate in "${SKIFF_MINIO_BIN:-}" "$(command -v minio 2>/dev/null || true)" "$gobin/minio" "$HOME/go/bin/minio"; do
  if [ -n "$candidate" ] && [ -x "$candidate" ]; then
    echo "minio: $candidate"
    exit 0
  fi
done

command -v go >/dev/null 2>&1 || { echo "install-minio: Go is required (see README)" >&2; exit 1; }
echo "installing MinIO with go install github.com/minio/minio@latest (a few minutes) ..."
go install github.com/minio/minio@latest
[ -x "$gobin/minio" ] || { echo "install-minio: go install finished but $gobin/minio is missing" >&2; exit 1; }
echo "minio: $gobin/minio"
