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

free_port() {  # a free 127.0.0.1 port whose successor is free too (Kafka's controller listener)
  python3 - <<'PY'
import socket
while True:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]
    t = socket.socket()
    try:
        t.bind(("127.0.0.1", p + 1)); print(p); break
    except OSError:
        pass
    finally:
        s.close(); t.close()
PY
}


# ---- setup ---------------------------------------------------------------------------------
if [[ -z "${SKIFF_BIN:-}" ]]; then
  log "building skiff (release) into $CARGO_TARGET_DIR"
  (cd "$ROOT" && timeout 3600 cargo build --release -p skiff)
  SKIFF_BIN="$CARGO_TARGET_DIR/release/skiff"
fi
LIBS="$("$HERE/kafka/setup.sh")"

VENV="$CACHE/bench/venv"
if [[ ! -f "$VENV/.complete" ]]; then
  log "creating $VENV (matplotlib, boto3)"
  python3 -m venv "$VENV"
  timeout 600 "$VENV/bin/pip" install -q matplotlib boto3
  touch "$VENV/.complete"
fi
PY="$VENV/bin/python"

BT="$CACHE/bench/benchtool"
if [[ ! -f "$BT/BenchTool.class" || "$HERE/java/BenchTool.java" -nt "$BT/BenchTool.class" ]]; then
  mkdir -p "$BT"; javac -d "$BT" -cp "$LIBS/*" "$HERE/java/BenchTool.java"
fi

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

# ---- MinIO ---------------------------------------------------------------------------------
export AWS_ACCESS_KEY_ID=benchadmin AWS_SECRET_ACCESS_KEY=benchadmin-secret AWS_REGION=us-east-1
MINIO_PID=""; MINIO_URL=""
start_minio() {
  local port; port="$(free_port)"
  MINIO_URL="http://127.0.0.1:$port"
  MINIO_ROOT_USER=$AWS_ACCESS_KEY_ID MINIO_ROOT_PASSWORD=$AWS_SECRET_ACCESS_KEY MINIO_PROMETHEUS_AUTH_TYPE=public \
    MINIO_BROWSER=off nohup "$MINIO_BIN" server "$WORK/minio" --address "127.0.0.1:$port" \
    --console-address "127.0.0.1:$(free_port)" >>"$OUT/raw/minio.log" 2>&1 </dev/null &
  MINIO_PID=$!; PIDS+=("$MINIO_PID")
  wait_http "$MINIO_URL/minio/health/live" 60
  "$PY" - "$MINIO_URL" <<'PY'
import sys, boto3
c = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1")
if "bench" not in [b["Name"] for b in c.list_buckets().get("Buckets", [])]:
    c.create_bucket(Bucket="bench")
PY
}
stop_minio() { [[ -n "$MINIO_PID" ]] && stop_pid "$MINIO_PID"; MINIO_PID=""; }

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

start_skiff() {  # start_skiff NAME [extra skiff args]; sets SKIFF_PID SKIFF_BOOT SKIFF_HTTP
  local name="$1"; shift
  local kport hport; kport="$(free_port)"; hport="$(free_port)"
  nohup "$SKIFF_BIN" dev --data-dir "$WORK/$name" --kafka-listen "127.0.0.1:$kport" \
    --http-listen "127.0.0.1:$hport" "$@" >"$OUT/raw/$name.broker.log" 2>&1 </dev/null &
  SKIFF_PID=$!; PIDS+=("$SKIFF_PID")
  SKIFF_BOOT="127.0.0.1:$kport"; SKIFF_HTTP="http://127.0.0.1:$hport"
  wait_http "$SKIFF_HTTP/health" 60
  "$HERE/kafka/wait-ready.sh" "$SKIFF_BOOT" 60
}

for target in $TARGETS; do
  case "$target" in
    kafka)
      port="$(free_port)"
      pid="$(KAFKA_READY_TIMEOUT=120 "$HERE/kafka/start-background.sh" "$port" "$WORK/kafka" "$OUT/raw/kafka.broker.log" | tail -1)"
      PIDS+=("$pid")
      bench_target kafka "127.0.0.1:$port" "$pid" --scaling
      stop_pid "$pid" ;;
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
