# Shell helpers shared by bench/run.sh, bench/compaction.sh, bench/transactions.sh and
# bench/partitions.sh (sourced; the caller defines `log` and HERE; the start_* helpers also use its
# OUT, WORK, PIDS, SKIFF_BIN and MINIO_BIN, and record every pid they start in PIDS so the caller's
# EXIT trap stops it). Every wait is bounded.

stop_pid() {  # stop_pid PID: SIGTERM, wait up to 30 s, then SIGKILL
  local pid="$1" i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
  log "pid $pid did not stop after SIGTERM; SIGKILL"; kill -KILL "$pid" 2>/dev/null || true
}

cleanup_started() {  # the EXIT trap of stop_on_exit
  local rc=$?
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  rm -rf "$WORK"
  exit "$rc"
}
stop_on_exit() {  # on exit (also INT/TERM): stop every pid the script put in PIDS, remove WORK
  trap cleanup_started EXIT
  trap 'exit 130' INT TERM
}

wait_http() {  # wait_http URL SECONDS
  local deadline=$((SECONDS + $2))
  until curl -fsS -o /dev/null "$1" 2>/dev/null; do
    (( SECONDS < deadline )) || { log "timeout waiting for $1"; return 1; }
    sleep 0.5
  done
}

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

# setup_tools: the release skiff (built into CARGO_TARGET_DIR unless SKIFF_BIN is set), Kafka's jars
# (LIBS) and BenchTool compiled into BT. Sets SKIFF_BIN, LIBS, BT; needs CACHE.
setup_tools() {
  if [[ -z "${SKIFF_BIN:-}" ]]; then
    log "building skiff (release) into $CARGO_TARGET_DIR"
    (cd "$HERE/.." && timeout 3600 cargo build --release -p skiff)
    SKIFF_BIN="$CARGO_TARGET_DIR/release/skiff"
  fi
  LIBS="$("$HERE/kafka/setup.sh")"
  BT="$CACHE/bench/benchtool"
  if [[ ! -f "$BT/BenchTool.class" || "$HERE/java/BenchTool.java" -nt "$BT/BenchTool.class" ]]; then
    mkdir -p "$BT"; javac -d "$BT" -cp "$LIBS/*" "$HERE/java/BenchTool.java"
  fi
}

# setup_venv: the bench venv (matplotlib, boto3) under CACHE; sets PY.
setup_venv() {
  VENV="$CACHE/bench/venv"
  if [[ ! -f "$VENV/.complete" ]]; then
    log "creating $VENV (matplotlib, boto3)"
    python3 -m venv "$VENV"
    timeout 600 "$VENV/bin/pip" install -q matplotlib boto3
    touch "$VENV/.complete"
  fi
  PY="$VENV/bin/python"
}

# start_kafka DIR LOG: Apache Kafka (bench/kafka/run-kafka.sh settings) on a free port, data in
# DIR; waits until clients can connect. Sets KAFKA_PID (the broker's JVM) and KAFKA_BOOT.
start_kafka() {
  local port pid; port="$(free_port)"
  # (explicit returns: a caller may test the status, where `set -e` does not apply)
  pid="$(KAFKA_READY_TIMEOUT="${KAFKA_READY_TIMEOUT:-120}" "$HERE/kafka/start-background.sh" "$port" "$1" "$2" | tail -1)" || return 1
  # run-kafka.sh execs java, so this is the JVM; if setsid had to fork, it is the child.
  [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == java ]] || pid="$(pgrep -P "$pid" -x java | head -1)"
  [[ -n "$pid" ]] || return 1
  KAFKA_PID="$pid"; KAFKA_BOOT="127.0.0.1:$port"; PIDS+=("$pid")
}

# start_skiff NAME [extra skiff args]: `skiff dev` with data in WORK/NAME, log OUT/raw/NAME.broker.log.
# Sets SKIFF_PID SKIFF_BOOT SKIFF_HTTP.
start_skiff() {
  local name="$1"; shift
  local kport hport; kport="$(free_port)"; hport="$(free_port)"
  nohup "$SKIFF_BIN" dev --data-dir "$WORK/$name" --kafka-listen "127.0.0.1:$kport" \
    --http-listen "127.0.0.1:$hport" "$@" >"$OUT/raw/$name.broker.log" 2>&1 </dev/null &
  SKIFF_PID=$!; PIDS+=("$SKIFF_PID")
  SKIFF_BOOT="127.0.0.1:$kport"; SKIFF_HTTP="http://127.0.0.1:$hport"
  wait_http "$SKIFF_HTTP/health" 60 || return 1
  "$HERE/kafka/wait-ready.sh" "$SKIFF_BOOT" 60 || return 1
}

# A single-drive MinIO under $WORK/minio with bucket `bench`, its URL in MINIO_URL (node metrics
# public, so a harness can count requests).
MINIO_PID=""; MINIO_URL=""
start_minio() {
  local port; port="$(free_port)"
  MINIO_URL="http://127.0.0.1:$port"
  rm -rf "$WORK/minio"; mkdir -p "$WORK/minio"
  MINIO_ROOT_USER=$AWS_ACCESS_KEY_ID MINIO_ROOT_PASSWORD=$AWS_SECRET_ACCESS_KEY MINIO_BROWSER=off \
    MINIO_PROMETHEUS_AUTH_TYPE=public \
    nohup "$MINIO_BIN" server "$WORK/minio" --address "127.0.0.1:$port" \
    --console-address "127.0.0.1:$(free_port)" >>"$OUT/raw/minio.log" 2>&1 </dev/null &
  MINIO_PID=$!; PIDS+=("$MINIO_PID")
  wait_http "$MINIO_URL/minio/health/live" 60 || return 1
  curl -fsS --aws-sigv4 "aws:amz:us-east-1:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
    -X PUT "$MINIO_URL/bench" >/dev/null
}
stop_minio() { [[ -n "$MINIO_PID" ]] && { stop_pid "$MINIO_PID"; MINIO_PID=""; }; rm -rf "$WORK/minio"; }
