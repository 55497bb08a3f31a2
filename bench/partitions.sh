#!/usr/bin/env bash
# Partition sweep (issue #18): produce latency and broker memory as the partition count grows, at a
# fixed rate, on Apache Kafka 4.4, `skiff dev` on a local directory and `skiff dev` on MinIO:
#   bench/partitions.sh
# For each partition count, each target IN TURN (never two brokers at once), a freshly started broker
# (fresh data dir, fresh MinIO): create one topic of P partitions, warm it up (WARMUP seconds at RATE,
# at least one record per key so every partition is written), then Kafka's ProducerPerformance at
# RATE records/s of SIZE bytes for DURATION seconds (1 producer, acks=all, keys round-robin over
# max(4096, 10 x P) keys, client defaults otherwise). Records p50/p99/p99.9/max (all records, and
# steady state after the run's first 2 s), the rate achieved, the broker's VmHWM (whole life of
# that broker: topic creation, warm-up, run) and sampled VmRSS, its CPU during the run; Skiff's
# /metrics after each run is kept in raw/. Writes bench/results/<date>-partitions/ (results.md,
# results.json, latency.png, rss.png, raw/) with partitions_report.py.
#
# Env: PARTITIONS (default 100,1000,2000,10000), RATE (10000 records/s), SIZE (1024 bytes),
#      DURATION (60 s of measured producing per point), WARMUP (10 s), REPS (1; repetitions of the
#      whole sweep), PRODUCER_PROPS (extra producer properties, e.g. "buffer.memory=268435456"), BENCH_TARGETS (default "kafka skiff-local skiff-s3"), SKIFF_BIN (skip the
#      release build), MINIO_BIN (~/go/bin/minio), CARGO_TARGET_DIR, SKIFF_CACHE, BENCH_OUT
#      (results dir). Same harness conventions as bench/run.sh: loopback ports, every process
#      stopped on exit, every step under a timeout. Run it on an otherwise idle machine.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
CACHE="${SKIFF_CACHE:-$HOME/.cache/skiff}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
PARTITIONS="${PARTITIONS:-100,1000,2000,10000}"
RATE="${RATE:-10000}"; SIZE="${SIZE:-1024}"; DURATION="${DURATION:-60}"; WARMUP="${WARMUP:-10}"; REPS="${REPS:-1}"
PRODUCER_PROPS="${PRODUCER_PROPS:-}"
TARGETS="${BENCH_TARGETS:-kafka skiff-local skiff-s3}"
OUT="${BENCH_OUT:-$HERE/results/$(date +%F)-partitions}"
MINIO_BIN="${MINIO_BIN:-$HOME/go/bin/minio}"
log() { echo "[partitions $(date +%T)] $*" >&2; }
for v in RATE SIZE DURATION WARMUP REPS; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "$v must be a positive integer (got '${!v}')" >&2; exit 2; }
done
[[ "$PARTITIONS" =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || { echo "PARTITIONS: comma-separated counts (got '$PARTITIONS')" >&2; exit 2; }

PIDS=()
WORK="$(mktemp -d /tmp/skiff-partitions.XXXXXX)"
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"
cleanup() {
  local rc=$?
  # a Kafka broker whose start-up was interrupted is only known by its pid file
  [[ -f "$WORK/kafka.conf/kafka.pid" ]] && PIDS+=("$(cat "$WORK/kafka.conf/kafka.pid")")
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

setup_tools   # SKIFF_BIN, LIBS, BT (bench/lib.sh)
setup_venv    # PY
HAVE_MINIO=0; [[ -x "$MINIO_BIN" ]] && HAVE_MINIO=1

rm -rf "$OUT"; mkdir -p "$OUT/raw"
log "partitions $PARTITIONS, $RATE records/s x $SIZE B, ${DURATION}s per point (+${WARMUP}s warm-up), reps $REPS; results in $OUT"
{
  echo "date: $(date -Is)"
  echo "profile: partitions $PARTITIONS; $RATE records/s of $SIZE B for $DURATION s per point after a $WARMUP s warm-up; reps $REPS; targets $TARGETS; producer props: acks=all${PRODUCER_PROPS:+ $PRODUCER_PROPS}"
  echo "git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null) $(git -C "$ROOT" status --porcelain 2>/dev/null | wc -l) changed files"
  echo "skiff: $SKIFF_BIN (binary built $(date -r "$SKIFF_BIN" -Is))"; echo "kafka libs: $LIBS"; echo "cpus: $(nproc)"; echo "kernel: $(uname -r)"
  echo "java: $(java -version 2>&1 | head -1)"; echo "minio: $([[ $HAVE_MINIO == 1 ]] && "$MINIO_BIN" --version 2>/dev/null | head -1)"
  echo "load before start: $(cat /proc/loadavg)"
} > "$OUT/environment.txt"
export AWS_ACCESS_KEY_ID=benchadmin AWS_SECRET_ACCESS_KEY=benchadmin-secret AWS_REGION=us-east-1

# measure_point NAME BOOTSTRAP PID PARTITIONS REP DATA_DIR [extra partitions.py args]: one point
# against a running broker, bounded by the sum of partitions.py's own timeouts plus slack.
measure_point() {
  local name="$1" bootstrap="$2" pid="$3" parts="$4" rep="$5" data="$6"; shift 6
  local keys=$((parts * 10 > 4096 ? parts * 10 : 4096)) warm_records warm_s
  warm_records=$((RATE * WARMUP > keys ? RATE * WARMUP : keys)); warm_s=$(((warm_records + RATE - 1) / RATE))
  # = the sum of partitions.py's timeouts() (topic creation, warm-up, measured run) + slack
  local limit=$((120 + parts / 50 + 3 * warm_s + 60 + parts / 20 + 3 * DURATION + 90 + 180))
  log "$name: $parts partitions, rep $rep (pid $pid, $bootstrap, limit ${limit}s)"
  # In the background + wait, so a SIGTERM/SIGINT to this script is handled at once (the trap stops
  # partitions.py, which kills its tool JVMs, then the brokers).
  (cd "$HERE" && exec timeout "$limit" "$PY" partitions.py --target "$name" --bootstrap "$bootstrap" --pid "$pid" \
     --out "$OUT" --libs "$LIBS" --benchtool "$BT" --partitions "$parts" --rate "$RATE" --size "$SIZE" \
     --duration "$DURATION" --warmup "$WARMUP" --rep "$rep" --data-dir "$data" --producer-props "$PRODUCER_PROPS" "$@") \
     2> >(tee -a "$OUT/raw/$name.sweep.log" >&2) &
  local bpid=$!
  PIDS=("$bpid" "${PIDS[@]}")
  local rc=0
  wait "$bpid" || rc=$?
  (( rc == 0 )) || point_failed "$name" "$parts" "$rep" "partitions.py rc $rc"
}

# point_failed NAME PARTITIONS REP WHY: a JSON line, so that results.md lists the point under
# "Incomplete runs" instead of leaving it out; the sweep goes on with the next point.
point_failed() {
  log "$1 ${2}p rep $3: $4"
  mkdir -p "$OUT/raw/$1"
  python3 -c 'import json,sys,time; print(json.dumps({"target": sys.argv[1], "kind": "sweep", "partitions": int(sys.argv[2]),
    "rep": int(sys.argv[3]), "complete": False, "error": sys.argv[4], "t": time.time()}))' "$@" >> "$OUT/raw/$1/runs.jsonl"
}

started=$SECONDS
IFS=, read -r -a COUNTS <<< "$PARTITIONS"
for rep in $(seq 1 "$REPS"); do
  for parts in "${COUNTS[@]}"; do
    for target in $TARGETS; do
      t0=$SECONDS
      case "$target" in
        kafka)
          if start_kafka "$WORK/kafka" "$OUT/raw/kafka-${parts}p-r$rep.broker.log"; then
            measure_point kafka "$KAFKA_BOOT" "$KAFKA_PID" "$parts" "$rep" "$WORK/kafka"
            stop_pid "$KAFKA_PID"
          else
            point_failed kafka "$parts" "$rep" "broker did not start"
            [[ -f "$WORK/kafka.conf/kafka.pid" ]] && stop_pid "$(cat "$WORK/kafka.conf/kafka.pid")"
          fi ;;
        skiff-local)
          if start_skiff "skiff-local-${parts}p-r$rep"; then
            measure_point skiff-local "$SKIFF_BOOT" "$SKIFF_PID" "$parts" "$rep" "$WORK/skiff-local-${parts}p-r$rep" \
              --metrics-url "$SKIFF_HTTP/metrics"
          else
            point_failed skiff-local "$parts" "$rep" "broker did not start"
          fi
          stop_pid "$SKIFF_PID" ;;
        skiff-s3)
          if [[ $HAVE_MINIO != 1 ]]; then log "skiff-s3: no minio binary at $MINIO_BIN; skipped"; continue; fi
          SKIFF_PID=""
          if start_minio && start_skiff "skiff-s3-${parts}p-r$rep" --storage s3://bench/skiff --s3-endpoint "$MINIO_URL" \
               --s3-region us-east-1; then
            measure_point skiff-s3 "$SKIFF_BOOT" "$SKIFF_PID" "$parts" "$rep" "$WORK/skiff-s3-${parts}p-r$rep" \
              --metrics-url "$SKIFF_HTTP/metrics" --minio-metrics-url "$MINIO_URL/minio/v2/metrics/node"
          else
            point_failed skiff-s3 "$parts" "$rep" "MinIO or broker did not start"
          fi
          [[ -n "$SKIFF_PID" ]] && stop_pid "$SKIFF_PID"
          stop_minio ;;
        *) log "unknown target $target"; continue ;;
      esac
      rm -rf "$WORK"/kafka "$WORK"/kafka.conf "$WORK"/skiff-* "$WORK"/minio  # keep the disk from filling up
      # A broker's log at 10,000 partitions is ~14 MB of per-partition INFO lines: kept, compressed.
      find "$OUT/raw" -maxdepth 1 -name '*.broker.log' -size +1M -exec gzip -9 {} +
      log "$target ${parts}p rep $rep: $((SECONDS - t0)) s (total $((SECONDS - started)) s)"
    done
  done
done
echo "wall time: $((SECONDS - started)) s" >> "$OUT/environment.txt"

"$PY" "$HERE/partitions_report.py" "$OUT"
log "done in $((SECONDS - started)) s: $OUT/results.md"
