#!/usr/bin/env bash
# Transactions (issue #13): what exactly-once costs, against Apache Kafka in the same run.
#   bench/transactions.sh [quick|full]
# Per target (kafka, skiff-local = `skiff dev` on a local directory, skiff-s3 = `skiff dev` on
# MinIO when a minio binary exists), one broker at a time:
#   * produce throughput: Kafka's ProducerPerformance with identical arguments, once plain
#     (idempotent, acks=all) and once with `--transactional-id` (its default transaction
#     duration, 3 s): target transactional Skiff ≥ 0.8 × transactional Kafka;
#   * end-to-end read_committed latency at a fixed rate (BenchTool txn-e2e: send() to poll() by a
#     read_committed consumer, a commit every TXN_MS): target p99 ≤ 1.5 × Kafka's;
# and, for Skiff only, a 3-controller 3-broker cluster on MinIO:
#   * transaction coordinator failover: BenchTool txn-loop runs back-to-back one-record
#     transactions; the broker that coordinates its transactional id is SIGKILLed; failover =
#     kill → the first commitTransaction returning after it. Target p99 ≤ 2 s.
# Writes bench/results/<date>-transactions/results.md (+ raw/). Same harness conventions as
# bench/run.sh: loopback ports, every process stopped on exit, every step under a timeout.
#
# Env: SKIFF_BIN (skip the release build), MINIO_BIN (~/go/bin/minio), CARGO_TARGET_DIR,
#      SKIFF_CACHE, BENCH_OUT, TARGETS (default: "kafka skiff-local skiff-s3").
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PROFILE="${1:-quick}"
case "$PROFILE" in
  quick) RECORDS=300000; SIZE=512; E2E_RATE=500; E2E_SECS=30; TXN_MS=100; FAILOVERS=5; REPS=1 ;;
  smoke) RECORDS=20000; SIZE=512; E2E_RATE=200; E2E_SECS=5; TXN_MS=100; FAILOVERS=1; REPS=1 ;;
  full) RECORDS=1500000; SIZE=512; E2E_RATE=1000; E2E_SECS=120; TXN_MS=100; FAILOVERS=20; REPS=3 ;;
  *) echo "usage: $0 [quick|full|smoke]" >&2; exit 2 ;;
esac
CACHE="${SKIFF_CACHE:-$HOME/.cache/skiff}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
OUT="${BENCH_OUT:-$HERE/results/$(date +%F)-transactions}"
MINIO_BIN="${MINIO_BIN:-$HOME/go/bin/minio}"
log() { echo "[transactions $(date +%T)] $*" >&2; }

PIDS=()
WORK="$(mktemp -d /tmp/skiff-txn-bench.XXXXXX)"
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"
stop_on_exit   # bench/lib.sh: every pid in PIDS stopped, WORK removed


setup_tools   # SKIFF_BIN, LIBS, BT (bench/lib.sh)
java_tool() { timeout "$1" java -Xmx1g -Dlog4j2.configurationFile="$HERE/kafka/log4j2-tools.properties" -cp "$BT:$LIBS/*" "${@:2}"; }

rm -rf "$OUT"; mkdir -p "$OUT/raw"
{
  echo "date: $(date -Is)"
  echo "profile: $PROFILE (records $RECORDS x $SIZE B; e2e $E2E_RATE/s for $E2E_SECS s, commit every $TXN_MS ms; failovers $FAILOVERS; reps $REPS)"
  echo "git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)"; echo "cpus: $(nproc)"; echo "load before start: $(cat /proc/loadavg)"
} > "$OUT/environment.txt"

export AWS_ACCESS_KEY_ID=benchadmin AWS_SECRET_ACCESS_KEY=benchadmin-secret AWS_REGION=us-east-1

# record TARGET KIND REP JSON: one line of raw/runs.jsonl.
record() {
  python3 -c 'import json,sys; print(json.dumps({"target": sys.argv[1], "kind": sys.argv[2], "rep": int(sys.argv[3]), "result": json.loads(sys.argv[4] or "null")}))' \
    "$1" "$2" "$3" "$4" >> "$OUT/raw/runs.jsonl"
}

# producer_perf TARGET KIND REP BOOTSTRAP [extra args]: ProducerPerformance, summary parsed by parse.py.
producer_perf() {
  local target="$1" kind="$2" rep="$3" bootstrap="$4"; shift 4
  local log_file="$OUT/raw/$target-$kind-$rep.pp.log"
  java_tool 900 org.apache.kafka.tools.ProducerPerformance --topic perf --num-records "$RECORDS" \
    --record-size "$SIZE" --throughput -1 --producer-props bootstrap.servers="$bootstrap" acks=all "$@" \
    >"$log_file" 2>&1 || log "$target $kind: ProducerPerformance failed (see $log_file)"
  local summary
  summary="$(cd "$HERE" && python3 -c 'import json,sys,parse; print(json.dumps(parse.producer_perf(open(sys.argv[1]).read())))' "$log_file")"
  record "$target" "$kind" "$rep" "$summary"
  log "$target $kind rep $rep: $summary"
}

# bench_target TARGET BOOTSTRAP: the throughput and latency runs against one running broker.
bench_target() {
  local target="$1" bootstrap="$2" rep result
  java_tool 120 BenchTool create-topics "$bootstrap" 8 perf >/dev/null
  java_tool 120 BenchTool create-topics "$bootstrap" 1 e2e >/dev/null
  for rep in $(seq 1 "$REPS"); do
    producer_perf "$target" produce "$rep" "$bootstrap"
    producer_perf "$target" produce-txn "$rep" "$bootstrap" --transactional-id "bench-pp-$target-$rep"
    result="$(java_tool $((E2E_SECS * 3 + 120)) BenchTool txn-e2e "$bootstrap" e2e "$E2E_RATE" "$E2E_SECS" "$TXN_MS" "$SIZE" \
      2>>"$OUT/raw/$target-e2e-$rep.log" | tail -1)" || log "$target txn-e2e failed"
    record "$target" e2e-read-committed "$rep" "$result"
    log "$target e2e rep $rep: $result"
  done
}

run_kafka() {
  start_kafka "$WORK/kafka" "$OUT/raw/kafka.broker.log"
  bench_target kafka "$KAFKA_BOOT"
  stop_pid "$KAFKA_PID"; rm -rf "$WORK/kafka" "$WORK/kafka.conf"
}

run_skiff_dev() {  # run_skiff_dev TARGET [extra skiff args]
  local target="$1"; shift
  local kport hport spid
  kport="$(free_port)"; hport="$(free_port)"
  nohup "$SKIFF_BIN" dev --data-dir "$WORK/$target" --kafka-listen "127.0.0.1:$kport" --http-listen "127.0.0.1:$hport" "$@" \
    >"$OUT/raw/$target.broker.log" 2>&1 </dev/null &
  spid=$!; PIDS+=("$spid")
  wait_http "http://127.0.0.1:$hport/health" 60
  "$HERE/kafka/wait-ready.sh" "127.0.0.1:$kport" 60
  bench_target "$target" "127.0.0.1:$kport"
  curl -fsS "http://127.0.0.1:$hport/metrics" > "$OUT/raw/$target.metrics.txt" || true
  stop_pid "$spid"; rm -rf "${WORK:?}/$target"
}

# The failover runs: 3 controllers + 3 brokers on MinIO, the coordinator broker killed FAILOVERS times.
declare -A BROKER_PID BROKER_PORT
start_broker() {  # start_broker ID CONTROLLERS
  local id="$1" port; port="${BROKER_PORT[$id]:-$(free_port)}"; BROKER_PORT[$id]="$port"
  nohup "$SKIFF_BIN" broker --node-id "$id" --kafka-listen "127.0.0.1:$port" --controllers "$2" \
    --data-dir "$WORK/cluster/b$id" --http-listen "127.0.0.1:0" \
    --storage s3://bench/skiff --s3-endpoint "$MINIO_URL" --s3-region us-east-1 \
    >>"$OUT/raw/cluster-broker-$id.log" 2>&1 </dev/null &
  BROKER_PID[$id]=$!; PIDS+=("$!")
}
run_failover() {
  start_minio
  local voters="" controllers="" id port
  declare -A cport
  for id in 1 2 3; do cport[$id]="$(free_port)"; done
  voters="1=127.0.0.1:${cport[1]},2=127.0.0.1:${cport[2]},3=127.0.0.1:${cport[3]}"
  controllers="127.0.0.1:${cport[1]},127.0.0.1:${cport[2]},127.0.0.1:${cport[3]}"
  for id in 1 2 3; do
    nohup "$SKIFF_BIN" controller --node-id "$id" --controller-listen "127.0.0.1:${cport[$id]}" --voters "$voters" \
      --data-dir "$WORK/cluster/c$id" --http-listen "127.0.0.1:0" \
      --storage s3://bench/skiff --s3-endpoint "$MINIO_URL" --s3-region us-east-1 \
      >>"$OUT/raw/cluster-controller-$id.log" 2>&1 </dev/null &
    PIDS+=("$!")
  done
  for id in 4 5 6; do start_broker "$id" "$controllers"; done
  local bootstrap="127.0.0.1:${BROKER_PORT[4]},127.0.0.1:${BROKER_PORT[5]},127.0.0.1:${BROKER_PORT[6]}"
  "$HERE/kafka/wait-ready.sh" "$bootstrap" 120
  java_tool 120 BenchTool create-topics "$bootstrap" 3 loop >/dev/null
  local rep loop_pid coord kill_ms
  for rep in $(seq 1 "$FAILOVERS"); do
    java_tool 120 BenchTool txn-loop "$bootstrap" loop "bench-failover-$rep" 40 >"$OUT/raw/failover-$rep.jsonl" 2>>"$OUT/raw/failover-$rep.log" &
    loop_pid=$!
    sleep 12
    coord="$(java_tool 60 BenchTool txn-coordinator "$bootstrap" "bench-failover-$rep" 2>>"$OUT/raw/failover-$rep.log" | tail -1)"
    if [[ -z "${BROKER_PID[$coord]:-}" ]]; then
      log "failover $rep: coordinator '$coord' is not one of the brokers; skipped"
      wait "$loop_pid" || true
      continue
    fi
    kill_ms="$(date +%s%3N)"
    kill -KILL "${BROKER_PID[$coord]}"
    log "failover $rep: killed broker $coord (coordinator of bench-failover-$rep)"
    wait "$loop_pid" || true
    python3 - "$OUT/raw/failover-$rep.jsonl" "$kill_ms" "$coord" "$rep" >> "$OUT/raw/failover.jsonl" <<'PY'
import json, sys
path, kill_ms, coord, rep = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
rows = [json.loads(l) for l in open(path) if l.strip().startswith("{")]
after = [r["t_ms"] for r in rows if "t_ms" in r and r["t_ms"] > kill_ms]
before = [r["t_ms"] for r in rows if "t_ms" in r and r["t_ms"] <= kill_ms]
errors = [r["error"] for r in rows if "error" in r]
print(json.dumps({"rep": rep, "coordinator": coord, "commits_before": len(before), "commits_after": len(after),
                  "failover_ms": (after[0] - kill_ms) if after else None, "errors": errors}))
PY
    log "failover $rep: $(tail -1 "$OUT/raw/failover.jsonl")"
    start_broker "$coord" "$controllers"
    "$HERE/kafka/wait-ready.sh" "127.0.0.1:${BROKER_PORT[$coord]}" 60
    sleep 5
  done
  stop_minio
}

read -r -a WANT <<< "${TARGETS:-kafka skiff-local skiff-s3}"
for target in "${WANT[@]}"; do
  case "$target" in
    kafka) run_kafka ;;
    skiff-local) run_skiff_dev skiff-local ;;
    skiff-s3)
      if [[ -x "$MINIO_BIN" ]]; then
        start_minio
        run_skiff_dev skiff-s3 --storage s3://bench/skiff --s3-endpoint "$MINIO_URL" --s3-region us-east-1
        stop_minio
        run_failover
      else
        log "no MinIO binary at $MINIO_BIN: skiff-s3 and the failover runs skipped"
      fi ;;
    *) log "unknown target $target" ;;
  esac
done
python3 "$HERE/transactions_report.py" "$OUT" > "$OUT/results.md"
log "done: $OUT/results.md"
cat "$OUT/results.md"
