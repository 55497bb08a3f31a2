#!/usr/bin/env bash
# Peak memory of `skiff dev` (local directory) under bench.py's workload, without Kafka or MinIO:
# the skiff-local part of `bench/run.sh`, for issue #18's memory budget (docs/observability.md,
# "Memory"). Samples the broker's VmRSS every 0.5 s and its VmHWM at the end, and scrapes
# `skiff_process_resident_bytes` and the cache/buffer gauges from /metrics at the end.
#
#   bench/rss.sh [quick|full]    bench.py's skiff-local workload (time-bound runs: on a loaded
#                                machine little data passes, and memory follows data)
#   bench/rss.sh volume [MIB]    a fixed volume instead: MIB (default 1536) MiB of 1 KiB records
#                                produced unthrottled to 16 partitions, all of it read back from
#                                the start, then 1,000 partitions at 2,000 records/s for 10 s
#
# Env: SKIFF_BIN (default $CARGO_TARGET_DIR/release/skiff, no build), SKIFF_WRAP (a command that
#      runs the broker, e.g. "heaptrack -o /tmp/skiff" or "env MALLOC_ARENA_MAX=2"),
#      RSS_OUT (results dir; default a mktemp dir, kept), SKIFF_CACHE (~/.cache/skiff),
#      RSS_BROKER=kafka (Apache Kafka 4.4 with bench/kafka's settings instead, same workload).
# Prints one line: peak VmRSS, VmHWM and the budget of the configured defaults.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROFILE="${1:-quick}"
CACHE="${SKIFF_CACHE:-$HOME/.cache/skiff}"
SKIFF_BIN="${SKIFF_BIN:-${CARGO_TARGET_DIR:-$CACHE/target}/release/skiff}"
OUT="${RSS_OUT:-$(mktemp -d /tmp/skiff-rss.XXXXXX)}"
WORK="$(mktemp -d /tmp/skiff-rss-data.XXXXXX)"
log() { echo "[rss $(date +%T)] $*" >&2; }
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

PIDS=()
stop_on_exit   # bench/lib.sh: every pid in PIDS stopped, WORK removed

setup_tools   # LIBS, BT (bench/lib.sh)
mkdir -p "$OUT/raw"

kport="$(free_port)"; hport="$(free_port)"
if [[ "${RSS_BROKER:-skiff}" == kafka ]]; then
  # Apache Kafka with bench/kafka's settings, for the same workload's peak RSS (its controller
  # listener takes the next port: pick one whose successor is free too).
  kport="$(python3 -c 'import socket
while True:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; t = socket.socket()
    try:
        t.bind(("127.0.0.1", p + 1)); print(p); break
    except OSError: pass
    finally: s.close(); t.close()')"
  PID="$(KAFKA_READY_TIMEOUT=120 "$HERE/kafka/start-background.sh" "$kport" "$WORK/kafka" "$OUT/raw/broker.log" | tail -n 1)"
  PIDS+=("$PID")
  HTTP="http://127.0.0.1:1"  # no /metrics
else
  # shellcheck disable=SC2086 # SKIFF_WRAP is a command prefix, split on purpose
  nohup ${SKIFF_WRAP:-} "$SKIFF_BIN" dev --data-dir "$WORK/skiff" --kafka-listen "127.0.0.1:$kport" \
    --http-listen "127.0.0.1:$hport" >"$OUT/raw/broker.log" 2>&1 </dev/null &
  PIDS+=("$!")
  HTTP="http://127.0.0.1:$hport"
  wait_http "$HTTP/health" 120
  # With a wrapper (heaptrack, env) the broker is the wrapper's child or the wrapper itself.
  PID="$(pgrep -n -f -- "--kafka-listen 127.0.0.1:$kport" | head -1)"
  "$HERE/kafka/wait-ready.sh" "127.0.0.1:$kport" 60
  PIDS=("$PID" "${PIDS[@]}")  # the broker first, then its wrapper (heaptrack writes its file after)
fi
log "broker pid $PID, results in $OUT"

( while kill -0 "$PID" 2>/dev/null; do
    echo "$(date +%s.%N) $(awk '/^VmRSS/{print $2}' "/proc/$PID/status" 2>/dev/null)"; sleep 0.5
  done ) > "$OUT/rss.txt" &
SAMPLER=$!

volume() {  # volume MIB
  local records=$(( $1 * 1024 )) cp="$LIBS/*:$BT" boot="127.0.0.1:$kport"
  java -cp "$cp" BenchTool create-topics "$boot" 16 vol16 > "$OUT/raw/create.txt" 2>&1
  java -cp "$cp" BenchTool create-topics "$boot" 1000 vol1000 >> "$OUT/raw/create.txt" 2>&1
  log "producing $1 MiB"
  timeout 1800 java -cp "$cp" org.apache.kafka.tools.ProducerPerformance --bootstrap-server "$boot" --topic vol16 \
    --num-records "$records" --record-size 1024 --throughput -1 --key-distribution range --record-key-range 4096 \
    --reporting-interval 5000 --command-property acks=all > "$OUT/raw/produce.txt" 2>&1 || log "produce failed"
  log "consuming"
  timeout 900 java -cp "$cp" BenchTool consume "$boot" vol16 "$records" 10000 > "$OUT/raw/consume.txt" 2>&1 || log "consume failed"
  log "1,000 partitions"
  timeout 300 java -cp "$cp" org.apache.kafka.tools.ProducerPerformance --bootstrap-server "$boot" --topic vol1000 \
    --num-records 20000 --record-size 1024 --throughput 2000 --key-distribution range --record-key-range 4096 \
    --command-property acks=all > "$OUT/raw/produce1000.txt" 2>&1 || log "1,000-partition produce failed"
  tail -n 1 "$OUT/raw/produce.txt" "$OUT/raw/consume.txt" "$OUT/raw/produce1000.txt" >&2 || true
}

if [[ "$PROFILE" == volume ]]; then
  volume "${2:-1536}"
else (cd "$HERE" && timeout 1200 python3 bench.py --target skiff-local --bootstrap "127.0.0.1:$kport" --pid "$PID" \
   --out "$OUT" --profile "$PROFILE" --libs "$LIBS" --benchtool "$BT" --metrics-url "$HTTP/metrics" --scaling) \
   2>"$OUT/raw/bench.log" || log "bench.py failed (rc $?; see $OUT/raw/bench.log)"
fi

curl -fsS "$HTTP/metrics" > "$OUT/metrics.txt" 2>/dev/null || true
hwm_kib="$(awk '/^VmHWM/{print $2}' "/proc/$PID/status")"
kill "$SAMPLER" 2>/dev/null || true
peak_kib="$(awk '$2 > m {m = $2} END {print m + 0}' "$OUT/rss.txt")"
# The budget of issue #18: tail cache + block cache + write buffer + 128 MiB (older builds
# have no capacity gauges: the defaults, 256 + 256 + 64 MiB).
budget="$(awk '/^skiff_(tail_cache_capacity|block_cache_capacity|buffer_max)_bytes /{b += $2; n++}
  END {print int((n ? b : 603979776) / 1048576) + 128}' "$OUT/metrics.txt" 2>/dev/null || echo 704)"
echo "peak VmRSS $((peak_kib / 1024)) MiB, VmHWM $((hwm_kib / 1024)) MiB, budget ${budget} MiB ($OUT)"
