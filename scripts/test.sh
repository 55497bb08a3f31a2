#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need (client libraries,
# cargo-fuzz), builds, fails on any rustfmt difference or clippy warning, and runs every suite.
# `.ci/run` calls exactly this.
#
#   scripts/test.sh            # everything (about 10-15 minutes when caches are warm)
#
# Caches live outside the clone so repeated runs are fast:
#   SKIFF_CACHE       default ~/.cache/skiff   (client libraries, fuzz builds)
#   CARGO_TARGET_DIR  default $SKIFF_CACHE/target
#   SKIFF_FUZZ_SECONDS  seconds per fuzz target (default 30)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
export SKIFF_CACHE="${SKIFF_CACHE:-$HOME/.cache/skiff}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$SKIFF_CACHE/target}"
export CARGO_TERM_COLOR=never
mkdir -p "$SKIFF_CACHE"

step() { printf '\n=== %s (%s)\n' "$1" "$(date +%H:%M:%S)"; }

step "toolchains"
missing=0
for tool in cargo go java mvn python3 node npm; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "missing required tool: $tool" >&2
    missing=1
  fi
done
[ "$missing" = 0 ] || { echo "install the missing toolchains (see README) and re-run" >&2; exit 1; }
cargo --version; go version; java -version 2>&1 | head -1; python3 --version; node --version

step "MinIO for the S3 tests (tests/minio.rs fails without it, in CI too)"
minio_line="$(scripts/install-minio.sh | tail -1)"
echo "$minio_line"
export SKIFF_MINIO_BIN="${minio_line#minio: }"

step "OpenTelemetry Collector for the trace test (tests/otel.rs; Go module proxy, cached)"
otelcol_line="$(scripts/install-otelcol.sh | tail -1)"
echo "$otelcol_line"
export SKIFF_OTELCOL_BIN="${otelcol_line#otelcol: }"

step "client libraries for the compat suites, Kafka Connect and Kafka Streams (tests/ecosystem.rs), the _schemas store (tests/schemas_topic.rs)"
tests/compat/setup.sh

step "Apache Kafka's tools for the admin-tool tests (Maven Central)"
bench/kafka/setup.sh

step "Apicurio Registry for the schema-registry tests (Maven Central)"
tests/compat/apicurio/setup.sh

step "Chromium (Debian) and playwright-core (npm) for the console's browser test (tests/console_browser.rs)"
tests/console/setup.sh

step "build"
cargo build --workspace --all-targets --locked

step "format and lints (fail fast: rustfmt, clippy with warnings as errors)"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "deploy: static checks of the Dockerfile and docker-compose.yml (also what the Docker run cannot reach)"
deploy/validate.sh

step "deploy: Helm chart (helm lint, helm template + kubeconform -strict against Kubernetes' schemas)"
deploy/helm/validate.sh

step "cargo test (unit, in-process, black-box, durability, six client families, Kafka Connect and Streams, _schemas)"
# The failover tests append their per-client distributions here (cargo hides a passing test's
# output); printed below so every run's log has them.
export SKIFF_FAILOVER_REPORT="$(mktemp /tmp/skiff-failover-report.XXXXXX)"
cargo test --workspace --locked -- --test-threads=4

step "failover as clients see it: kill -> first acknowledged produce / first record consumed (short profile)"
cat "$SKIFF_FAILOVER_REPORT"; rm -f "$SKIFF_FAILOVER_REPORT"

step "storage with the aws-profile feature (AWS profiles and SSO)"
cargo test -p skiff-storage --features aws-profile --locked --lib

# The last two steps share nothing (the Docker step builds images and runs containers, mostly
# waiting on them; fuzzing keeps one core busy and asserts no timing), so they run side by side:
# about 2.5 minutes less. The Docker step's output is printed when both have finished.
step "Docker (in the background): images built without a registry, the compose cluster (failover, stop/start), MinIO tests through testcontainers"
docker_log="$(mktemp /tmp/skiff-test-docker.XXXXXX)"
deploy/test-stack.sh > "$docker_log" 2>&1 &
docker_pid=$!

step "fuzz (bounded), beside the Docker step"
fuzz_rc=0
scripts/fuzz.sh "${SKIFF_FUZZ_SECONDS:-30}" || fuzz_rc=$?

step "Docker step's output"
docker_rc=0
wait "$docker_pid" || docker_rc=$?
cat "$docker_log"; rm -f "$docker_log"
[ "$docker_rc" = 0 ] || { echo "the Docker step failed (exit $docker_rc)" >&2; exit "$docker_rc"; }
[ "$fuzz_rc" = 0 ] || { echo "fuzzing failed (exit $fuzz_rc)" >&2; exit "$fuzz_rc"; }

step "done"
