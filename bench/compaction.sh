#!/usr/bin/env bash
# Compacted topics (issue #12): what the log cleaner costs, one command:
#   bench/compaction.sh [quick|full]
# For each storage target (local directory; MinIO when a minio binary exists) it runs the same
# keyed overwrite workload (one partition, KEYS keys, SIZE-byte values, RATE records/s, acks=all)
# against `skiff dev` twice, with the cleaner off and on, and records:
#   * produce latency p50/p99/p99.9 (send() to ack, BenchTool keyed-produce), the target being
#     p99 with the cleaner within 10 % of p99 without it;
#   * every committed cleaner pass (sampled from /metrics each second): bytes read and written
#     against the pass's cleanable bytes (target: each ≤ 1.2×), GETs and PUTs;
# and writes bench/results/<date>-compaction/results.md (+ raw/). Same harness conventions as
# bench/run.sh: loopback ports, every process stopped on exit, every step under a timeout.
#
# Env: SKIFF_BIN (skip the release build), MINIO_BIN (~/go/bin/minio), CARGO_TARGET_DIR,
#      SKIFF_CACHE, BENCH_OUT.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PROFILE="${1:-quick}"
# quick: 60 s per run at 2,000 records/s of 1 KiB (≈ 2 MiB/s), 20 k keys, 8 MiB segments;
# full: 300 s per run, 100 k keys, 2 repetitions.
case "$PROFILE" in
  quick) SECS=60; RATE=2000; KEYS=20000; SIZE=1024; SEG=8388608; REPS=1 ;;
  full) SECS=300; RATE=2000; KEYS=100000; SIZE=1024; SEG=16777216; REPS=2 ;;
  *) echo "usage: $0 [quick|full]" >&2; exit 2 ;;
esac
CACHE="${SKIFF_CACHE:-$HOME/.cache/skiff}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
OUT="${BENCH_OUT:-$HERE/results/$(date +%F)-compaction}"
MINIO_BIN="${MINIO_BIN:-$HOME/go/bin/minio}"
log() { echo "[compaction $(date +%T)] $*" >&2; }

PIDS=()
WORK="$(mktemp -d /tmp/skiff-compaction.XXXXXX)"
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"
stop_on_exit   # bench/lib.sh: every pid in PIDS stopped, WORK removed


setup_tools   # SKIFF_BIN, LIBS, BT (bench/lib.sh)
java_tool() { timeout "$1" java -Xmx1g -cp "$BT:$LIBS/*" "${@:2}"; }

rm -rf "$OUT"; mkdir -p "$OUT/raw"
{
  echo "date: $(date -Is)"; echo "profile: $PROFILE (secs $SECS, rate $RATE/s, keys $KEYS, value $SIZE B, segment.bytes $SEG, reps $REPS)"
  echo "git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)"; echo "cpus: $(nproc)"; echo "load before start: $(cat /proc/loadavg)"
} > "$OUT/environment.txt"

export AWS_ACCESS_KEY_ID=benchadmin AWS_SECRET_ACCESS_KEY=benchadmin-secret AWS_REGION=us-east-1

# run_one TARGET MODE REP: one skiff, one topic, one workload; appends a JSON line to raw/runs.jsonl.
# MODE: off (cleaner disabled), on (cleaner, 5 s backoff, segment.bytes=SEG), defaults (cleaner and
# topic at their defaults: only cleanup.policy=compact set; measures when the first pass lands).
run_one() {
  local target="$1" mode="$2" rep="$3" name="$1-$2-$3"
  local cleaner=true backoff=5s topic_cfg=(--config cleanup.policy=compact --config segment.bytes="$SEG")
  [[ "$mode" == off ]] && cleaner=false
  [[ "$mode" == defaults ]] && { backoff=15s; topic_cfg=(--config cleanup.policy=compact); }
  local kport hport extra=()
  kport="$(free_port)"; hport="$(free_port)"
  if [[ "$target" == s3 ]]; then
    start_minio
    extra=(--storage s3://bench/skiff --s3-endpoint "$MINIO_URL" --s3-region us-east-1)
  fi
  SKIFF_CLEANER_ENABLED="$cleaner" SKIFF_CLEANER_BACKOFF="$backoff" nohup "$SKIFF_BIN" dev --data-dir "$WORK/$name" \
    --kafka-listen "127.0.0.1:$kport" --http-listen "127.0.0.1:$hport" "${extra[@]}" \
    >"$OUT/raw/$name.broker.log" 2>&1 </dev/null &
  local spid=$!; PIDS+=("$spid")
  wait_http "http://127.0.0.1:$hport/health" 60
  "$HERE/kafka/wait-ready.sh" "127.0.0.1:$kport" 60
  java_tool 120 org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$kport" --create \
    --topic compacted --partitions 1 --replication-factor 1 "${topic_cfg[@]}" >>"$OUT/raw/$name.tools.log" 2>&1
  local started; started="$(date +%s.%N)"
  # Sample the cleaner's metrics every second while the producer runs (and 30 s after, so the
  # passes over the last rolled segments are seen too).
  python3 "$HERE/compaction_sampler.py" "http://127.0.0.1:$hport/metrics" compacted $((SECS + 30)) \
    >"$OUT/raw/$name.passes.jsonl" 2>>"$OUT/raw/$name.tools.log" &
  local sampler=$!; PIDS+=("$sampler")
  local records=$((SECS * RATE))
  local result
  result="$(java_tool $((SECS * 3 + 120)) BenchTool keyed-produce "127.0.0.1:$kport" compacted "$KEYS" "$records" "$SIZE" "$RATE" "$rep" \
    2>>"$OUT/raw/$name.tools.log" | tail -1)"
  wait "$sampler" || true
  curl -fsS "http://127.0.0.1:$hport/metrics" > "$OUT/raw/$name.metrics.txt" || true
  python3 - "$target" "$mode" "$rep" "$result" "$OUT/raw/$name.passes.jsonl" "$started" >> "$OUT/raw/runs.jsonl" <<'PY'
import json, sys
target, mode, rep, produce, passes, started = sys.argv[1:7]
rows = [json.loads(l) for l in open(passes) if l.strip()]
print(json.dumps({"target": target, "mode": mode, "cleaner": mode != "off", "rep": int(rep), "started": float(started),
                  "produce": json.loads(produce), "passes": rows}))
PY
  stop_pid "$spid"
  [[ -n "$MINIO_PID" ]] && { stop_pid "$MINIO_PID"; MINIO_PID=""; }
  rm -rf "$WORK/$name" "$WORK/minio"
  log "$name: $result"
}

TARGETS=(local)
[[ -x "$MINIO_BIN" ]] && TARGETS+=(s3)
for target in "${TARGETS[@]}"; do
  for rep in $(seq 1 "$REPS"); do
    for mode in off on; do
      run_one "$target" "$mode" "$rep"
    done
  done
  run_one "$target" defaults 1
done
python3 "$HERE/compaction_report.py" "$OUT" > "$OUT/results.md"
log "done: $OUT/results.md"
cat "$OUT/results.md"
