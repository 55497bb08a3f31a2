#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time and fails on any crash.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]      (default 60)
#
# Works on a stable toolchain: cargo-fuzz passes nightly-only flags (-Zsanitizer=address,
# -Cpasses=sancov-module, ...), which RUSTC_BOOTSTRAP=1 lets stable rustc accept. The
# AddressSanitizer runtime ships with the stable x86_64-unknown-linux-gnu std, so ASan works.
# Set FUZZ_SANITIZER=none for a faster build/run without it. Targets are built with debug
# assertions (-a), so integer overflow and debug_assert! failures count as crashes too.
#
# Environment:
#   FUZZ_SANITIZER   address (default) | none
#   FUZZ_TARGETS     space-separated subset of targets (default: all of `cargo fuzz list`)
#   FUZZ_TARGET_DIR  build directory (default: $CARGO_TARGET_DIR, else fuzz/target); the
#                    instrumented build lives under its x86_64-unknown-linux-gnu/ subdirectory
#
# Each target uses fuzz/corpus/<target>/ (committed seeds) as its read-only seed corpus and a
# scratch working corpus under $CARGO_TARGET_DIR/fuzz-corpus/<target>/ that persists between
# runs; crash reproducers land in fuzz/artifacts/<target>/. Limits: -max_total_time (bounded
# run), -rss_limit_mb=2048, -malloc_limit_mb=512 (a single allocation above 512 MiB is a
# crash: that is how an untrusted length prefix turning into an allocation shows up).
set -euo pipefail

SECONDS_PER_TARGET="${1:-60}"
SANITIZER="${FUZZ_SANITIZER:-address}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-$ROOT/fuzz/target}}"
export RUSTC_BOOTSTRAP=1

if ! [[ "$SECONDS_PER_TARGET" =~ ^[0-9]+$ ]] || (( SECONDS_PER_TARGET < 1 )); then
  echo "usage: $0 [SECONDS_PER_TARGET]" >&2
  exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

cd "$ROOT/fuzz"
if [[ -n "${FUZZ_TARGETS:-}" ]]; then
  read -r -a targets <<<"$FUZZ_TARGETS"
else
  mapfile -t targets < <(cargo fuzz list)
fi

echo "==> building ${targets[*]} (sanitizer: $SANITIZER)"
mkdir -p "$CARGO_TARGET_DIR"
if ! cargo fuzz build -O -a --sanitizer "$SANITIZER" >"$CARGO_TARGET_DIR/fuzz-build.log" 2>&1; then
  tail -n 40 "$CARGO_TARGET_DIR/fuzz-build.log" >&2
  exit 1
fi

status=0
summary=()
for t in "${targets[@]}"; do
  work="$CARGO_TARGET_DIR/fuzz-corpus/$t"
  seeds="$ROOT/fuzz/corpus/$t"
  mkdir -p "$work" "$seeds" "$ROOT/fuzz/artifacts/$t"
  log="$CARGO_TARGET_DIR/fuzz-$t.log"
  echo "==> fuzzing $t for ${SECONDS_PER_TARGET}s (log: $log)"
  set +e
  # Hard wall-clock bound on top of -max_total_time, in case a run hangs.
  timeout --kill-after=30 $((SECONDS_PER_TARGET + 120)) \
    cargo fuzz run -O -a --sanitizer "$SANITIZER" "$t" "$work" "$seeds" -- \
      -max_total_time="$SECONDS_PER_TARGET" \
      -rss_limit_mb=2048 \
      -malloc_limit_mb=512 \
      -timeout=10 \
      -print_final_stats=1 \
      -artifact_prefix="$ROOT/fuzz/artifacts/$t/" >"$log" 2>&1
  rc=$?
  set -e
  runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | awk '{s += $2} END {print s + 0}')"
  rate="$(( runs / SECONDS_PER_TARGET ))"
  if (( rc == 0 )); then
    result="ok"
  else
    result="FAILED (exit $rc)"
    status=1
    grep -E 'ERROR: libFuzzer|panicked at|SUMMARY|Test unit written to' "$log" | head -n 8 >&2 || true
  fi
  summary+=("$(printf '%-16s %-18s runs=%-10s ~%s runs/s' "$t" "$result" "$runs" "$rate")")
done

echo "==> summary (${SECONDS_PER_TARGET}s per target)"
printf '%s\n' "${summary[@]}"
exit "$status"
