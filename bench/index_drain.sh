#!/usr/bin/env bash
# How fast the un-compacted index drains (issue #18 scope 3, RFC 0002 "Adaptive pace"):
#   SKIFF_BIN=... bench/index_drain.sh [BUDGET...]
# For each hot-chunks budget (default: "0 20000"; 0 = the fixed pace of before the adaptive
# one), starts `skiff dev` on a local directory, creates a topic of PARTS partitions, runs
# Kafka's ProducerPerformance for SECS at RATE records/s of SIZE bytes (acks=all), and samples
# /metrics and the controller directory every 2 s. Prints, per budget, the peak and the
# mean over the last 30 s of SECS un-compacted chunk count, object-table size, index-bytes estimate and
# controller directory size, plus the produce latencies the tool reported. Loopback ports only;
# every process is stopped on exit, every step under a timeout.
#
# Env: SKIFF_BIN (required), PARTS (1000), SECS (90), RATE (10000), SIZE (1024), SKIFF_CACHE.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PARTS="${PARTS:-1000}" SECS="${SECS:-90}" RATE="${RATE:-10000}" SIZE="${SIZE:-1024}"
BUDGETS=("${@:-0 20000}")
read -r -a BUDGETS <<<"${BUDGETS[*]}"
: "${SKIFF_BIN:?set SKIFF_BIN to a skiff binary}"
log() { echo "[index_drain $(date +%T)] $*" >&2; }
PIDS=()
WORK="$(mktemp -d /tmp/skiff-index-drain.XXXXXX)"
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"
stop_on_exit   # bench/lib.sh: every pid in PIDS stopped, WORK removed
LIBS="$("$HERE/kafka/setup.sh")"
java_tool() { timeout "$1" java -Xmx512m -cp "$LIBS/*" "${@:2}"; }
gauge() { awk -v n="$1" '$1 == n { print $2 }' "$2"; }

for budget in "${BUDGETS[@]}"; do
  kport="$(free_port)"; hport="$(free_port)"; dir="$WORK/b$budget"
  SKIFF_COMPACTION_HOT_CHUNKS_BUDGET="$budget" nohup "$SKIFF_BIN" dev --data-dir "$dir" \
    --kafka-listen "127.0.0.1:$kport" --http-listen "127.0.0.1:$hport" >"$WORK/b$budget.log" 2>&1 </dev/null &
  spid=$!; PIDS+=("$spid")
  wait_http "http://127.0.0.1:$hport/health" 120
  "$HERE/kafka/wait-ready.sh" "127.0.0.1:$kport" 120
  java_tool 120 org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$kport" --create \
    --topic drain --partitions "$PARTS" --replication-factor 1 >/dev/null
  log "budget $budget: producing $SECS s at $RATE/s to $PARTS partitions"
  java_tool $((SECS + 120)) org.apache.kafka.tools.ProducerPerformance --topic drain \
    --num-records $((SECS * RATE)) --record-size "$SIZE" --throughput "$RATE" \
    --producer-props bootstrap.servers="127.0.0.1:$kport" acks=all >"$WORK/perf.txt" 2>&1 &
  ppid=$!; PIDS+=("$ppid")
  : >"$WORK/samples.txt"
  start=$SECONDS
  while kill -0 "$ppid" 2>/dev/null && (( SECONDS - start < SECS + 120 )); do
    curl -fsS "http://127.0.0.1:$hport/metrics" >"$WORK/m.txt" 2>/dev/null || true
    echo "$((SECONDS - start)) $(gauge skiff_index_uncompacted_chunks "$WORK/m.txt") \
$(gauge skiff_index_objects "$WORK/m.txt") $(gauge skiff_index_bytes "$WORK/m.txt") \
$(du -sk "$dir/controller" 2>/dev/null | cut -f1) $(gauge skiff_compaction_period_seconds "$WORK/m.txt")" >>"$WORK/samples.txt"
    sleep 2
  done
  wait "$ppid" || log "producer exited with $?"
  stop_pid "$spid"
  flushes="$(awk '$1 ~ /^skiff_flush_partitions_(sum|count)$/ { print $2 }' "$WORK/m.txt" | paste -sd' ')"
  echo "== budget $budget (partitions $PARTS, ${SECS}s at $RATE/s of $SIZE B; flush_partitions sum,count: $flushes)"
  awk -v secs="$SECS" '
    NF >= 5 { t=$1; if ($2>pc) pc=$2; if ($3>po) po=$3; if ($4>pb) pb=$4; if ($5>pd) pd=$5;
              if (t > secs - 30 && t <= secs) { n++; sc+=$2; so+=$3; sb+=$4; sd+=$5 } }
    END { printf "peak: uncompacted chunks %d, objects %d, index %.1f MB, controller dir %.1f MB\n", pc, po, pb/1e6, pd/1024;
          if (n) printf "mean over (SECS-30, SECS]: uncompacted chunks %d, objects %d, index %.1f MB, controller dir %.1f MB\n", sc/n, so/n, sb/n/1e6, sd/n/1024 }' \
    "$WORK/samples.txt"
  tail -1 "$WORK/perf.txt"
  cp "$WORK/samples.txt" "${OUT_DIR:-/tmp}/index_drain_samples_b$budget.txt" 2>/dev/null || true
  rm -rf "$dir"
done
