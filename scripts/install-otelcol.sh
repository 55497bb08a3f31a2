#!/usr/bin/env bash
# Installs the OpenTelemetry Collector that tests/otel.rs runs: an OTLP receiver (gRPC and
# HTTP) and the file exporter, built with the collector's own builder (ocb) from the Go module
# proxy; nothing else is compiled in, so it builds in a few minutes. Cached outside the clone
# under $SKIFF_CACHE/otelcol/<version>/ (idempotent: a second run only prints the path).
# Prints the path of the binary as its last line: `otelcol: <path>`.
set -euo pipefail

# Core and contrib release together; the builder and every component must share one version.
# Not the newest: the builder's `go mod tidy` also resolves the components' test-only modules,
# and the Go module proxy does not serve contrib's otlpencodingextension after v0.135.0.
core="v0.135.0"
stable="v1.41.0" # the 1.x modules of the same core release
contrib="v0.135.0"
cache="${SKIFF_CACHE:-$HOME/.cache/skiff}/otelcol/$core"
bin="$cache/otelcol-skiff"

if [ -x "$bin" ]; then
  echo "otelcol: $bin"
  exit 0
fi
command -v go >/dev/null 2>&1 || { echo "install-otelcol: Go is required (see README)" >&2; exit 1; }
mkdir -p "$cache"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat >"$work/manifest.yaml" <<YAML
dist:
  name: otelcol-skiff
  description: OTLP receiver + file exporter for Skiff's trace test
  output_path: $work/out
receivers:
  - gomod: go.opentelemetry.io/collector/receiver/otlpreceiver $core
exporters:
  - gomod: github.com/open-telemetry/opentelemetry-collector-contrib/exporter/fileexporter $contrib
providers:
  - gomod: go.opentelemetry.io/collector/confmap/provider/envprovider $stable
  - gomod: go.opentelemetry.io/collector/confmap/provider/fileprovider $stable
YAML
echo "building the OpenTelemetry Collector $core with ocb (Go module proxy; a few minutes) ..."
GOBIN="$work/bin" go install "go.opentelemetry.io/collector/cmd/builder@$core"
"$work/bin/builder" --config "$work/manifest.yaml"
install -m 0755 "$work/out/otelcol-skiff" "$bin"
echo "otelcol: $bin"
