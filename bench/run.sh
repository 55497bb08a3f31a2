#!/usr/bin/env bash
# Skiff vs Apache Kafka benchmark, one command:
#   bench/run.sh [quick|full]
# Builds Skiff (release), resolves Kafka 4.4 + tools (bench/kafka/setup.sh), makes a Python venv,
# measures raw machine limits, then runs each target IN TURN (never two at once):
#   kafka        Apache Kafka 4.4 single-node KRaft (bench/kafka/README.md settings)
#   skiff-local  skiff dev on a local directory
#   skiff-s3     skiff dev on MinIO (s3://), skipped when no minio binary
# and writes bench/results/<date>-<profile>/ (results.md, results.json, PNGs, raw/) and
# bench/results/LATEST.md. See bench/README.md.
#
# Env: CARGO_TARGET_DIR (default ~/.cache/skiff/target), SKIFF_CACHE (~/.cache/skiff),
#      SKIFF_BIN (skip the build, use this binary), MINIO_BIN (default ~/go/bin/minio),
#      BENCH_TARGETS (default "kafka skiff-local skiff-s3"), BENCH_OUT (results dir override),
#      BENCH_WORK (scratch dir for broker data; default a mktemp dir under /tmp, removed at exit).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PROFILE="${1:-quick}"
case "$PROFILE" in quick) TARGET_TIMEOUT=900 ;; full) TARGET_TIMEOUT=1200 ;;
  *) echo "usage: $0 [quick|full]" >&2; exit 2 ;; esac
CACHE="${SKIFF_CACHE:-$HOME/.cache/skiff}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
OUT="${BENCH_OUT:-$HERE/results/$(date +%F)-$PROFILE}"
TARGETS="${BENCH_TARGETS:-kafka skiff-local skiff-s3}"
MINIO_BIN="${MINIO_BIN:-$HOME/go/bin/minio}"
log() { echo "[bench $(date +%T)] $*" >&2; }

# ---- cleanup: every process we start is recorded here and killed on exit ----------------------
PIDS=()
WORK="${BENCH_WORK:-$(mktemp -d /tmp/skiff-bench.XXXXXX)}"
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"
cleanup() {
  local rc=$?
  # a Kafka broker whose start-up was interrupted is only known by its pid file
  [[ -f "$WORK/kafka.conf/kafka.pid" ]] && PIDS+=("$(cat "$WORK/kafka.conf/kafka.pid")")
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  [[ -z "${BENCH_WORK:-}" ]] && rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- setup ---------------------------------------------------------------------------------
setup_tools   # SKIFF_BIN, LIBS, BT (bench/lib.sh)
setup_venv    # PY

if [[ ! -x "$MINIO_BIN" ]] && command -v go >/dev/null; then
  log "installing minio with go install (Go module proxy)"
  timeout 1200 go install github.com/minio/minio@latest || true
fi
HAVE_MINIO=0; [[ -x "$MINIO_BIN" ]] && HAVE_MINIO=1

rm -rf "$OUT"; mkdir -p "$OUT/raw"
log "profile $PROFILE, results in $OUT, scratch $WORK"
{
  echo "date: $(date -Is)"; echo "profile: $PROFILE"; echo "git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null) $(git -C "$ROOT" status --porcelain 2>/dev/null | wc -l) changed files"
  echo "skiff: $SKIFF_BIN (binary built $(date -r "$SKIFF_BIN" -Is))"; echo "kafka libs: $LIBS"; echo "cpus: $(nproc)"; echo "kernel: $(uname -r)"
  echo "java: $(java -version 2>&1 | head -1)"; echo "minio: $([[ $HAVE_MINIO == 1 ]] && "$MINIO_BIN" --version 2>/dev/null | head -1)"
  echo "load before start: $(cat /proc/loadavg)"
} > "$OUT/environment.txt"

# ---- MinIO (start_minio / stop_minio of bench/lib.sh) ----------------------------------------
export AWS_ACCESS_KEY_ID=benchadmin AWS_SECRET_ACCESS_KEY=benchadmin-secret AWS_REGION=us-east-1

# ---- raw limits ----------------------------------------------------------------------------
log "raw limits: disk, fsync, loopback TCP$([[ $HAVE_MINIO == 1 ]] && echo ", MinIO")"
mkdir -p "$WORK/scratch"
S3ARGS=()
if [[ $HAVE_MINIO == 1 ]]; then start_minio; S3ARGS=(--s3-endpoint "$MINIO_URL" --s3-bucket bench); fi
timeout 600 "$PY" "$HERE/raw_limits.py" --out "$OUT/raw_limits.json" --scratch "$WORK/scratch" \
  --profile "$PROFILE" "${S3ARGS[@]}" > "$OUT/raw/raw_limits.txt" 2>&1 || log "raw limits failed (see raw/raw_limits.txt)"
stop_minio

# ---- targets, one at a time ----------------------------------------------------------------
bench_target() {  # bench_target NAME BOOTSTRAP PID [extra bench.py args]
  local name="$1" bootstrap="$2" pid="$3"; shift 3
  log "$name: measuring (pid $pid, $bootstrap)"
  # In the background + wait, so a SIGTERM/SIGINT to this script is handled at once (the trap stops
  # bench.py, which kills its tool JVMs, then the brokers).
  (cd "$HERE" && exec timeout "$TARGET_TIMEOUT" "$PY" bench.py --target "$name" --bootstrap "$bootstrap" --pid "$pid" \
     --out "$OUT" --profile "$PROFILE" --libs "$LIBS" --benchtool "$BT" "$@") \
     2> >(tee "$OUT/raw/$name.bench.log" >&2) &
  local bpid=$!
  PIDS=("$bpid" "${PIDS[@]}")
  wait "$bpid" || log "$name: bench.py failed or timed out (rc $?)"
}

for target in $TARGETS; do
  case "$target" in
    kafka)
      start_kafka "$WORK/kafka" "$OUT/raw/kafka.broker.log"
      bench_target kafka "$KAFKA_BOOT" "$KAFKA_PID" --scaling
      stop_pid "$KAFKA_PID" ;;
    skiff-local)
      start_skiff skiff-local
      bench_target skiff-local "$SKIFF_BOOT" "$SKIFF_PID" --metrics-url "$SKIFF_HTTP/metrics" --scaling
      stop_pid "$SKIFF_PID" ;;
    skiff-s3)
      if [[ $HAVE_MINIO != 1 ]]; then log "skiff-s3: no minio binary at $MINIO_BIN; skipped"; continue; fi
      start_minio
      start_skiff skiff-s3 --storage s3://bench/skiff --s3-endpoint "$MINIO_URL" --s3-region us-east-1
      bench_target skiff-s3 "$SKIFF_BOOT" "$SKIFF_PID" --metrics-url "$SKIFF_HTTP/metrics" \
        --minio-metrics-url "$MINIO_URL/minio/v2/metrics/node"
      stop_pid "$SKIFF_PID"; stop_minio ;;
    *) log "unknown target $target" ;;
  esac
  du -sh "$WORK"/* 2>/dev/null | sed 's/^/  /' >&2 || true
  rm -rf "$WORK/kafka" "$WORK/kafka.conf" "$WORK/skiff-local" "$WORK/skiff-s3" "$WORK/minio"  # keep the disk from filling up
done

# ---- report --------------------------------------------------------------------------------
"$PY" "$HERE/report.py" "$OUT"
# Same table, with the plot links pointing into the run directory.
sed -E "s#\]\(([^/)]+\.png)\)#](${OUT##*/}/\1)#g" "$OUT/results.md" > "$HERE/results/LATEST.md"
log "done: $OUT/results.md"
