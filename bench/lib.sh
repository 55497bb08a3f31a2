# Shell helpers shared by bench/run.sh, bench/compaction.sh and bench/transactions.sh (sourced;
# the caller defines `log`; the MinIO helpers also use its OUT, WORK, PIDS and MINIO_BIN). Every wait is bounded.

stop_pid() {  # stop_pid PID: SIGTERM, wait up to 30 s, then SIGKILL
  local pid="$1" i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
  log "pid $pid did not stop after SIGTERM; SIGKILL"; kill -KILL "$pid" 2>/dev/null || true
}

wait_http() {  # wait_http URL SECONDS
  local deadline=$((SECONDS + $2))
  until curl -fsS -o /dev/null "$1" 2>/dev/null; do
    (( SECONDS < deadline )) || { log "timeout waiting for $1"; return 1; }
    sleep 0.5
  done
}

free_port() {  # a free 127.0.0.1 port (run.sh defines its own: it needs the next one free too)
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# A single-drive MinIO under $WORK/minio with bucket `bench`, its URL in MINIO_URL.
MINIO_PID=""; MINIO_URL=""
start_minio() {
  local port; port="$(free_port)"
  MINIO_URL="http://127.0.0.1:$port"
  rm -rf "$WORK/minio"; mkdir -p "$WORK/minio"
  MINIO_ROOT_USER=$AWS_ACCESS_KEY_ID MINIO_ROOT_PASSWORD=$AWS_SECRET_ACCESS_KEY MINIO_BROWSER=off \
    nohup "$MINIO_BIN" server "$WORK/minio" --address "127.0.0.1:$port" \
    --console-address "127.0.0.1:$(free_port)" >>"$OUT/raw/minio.log" 2>&1 </dev/null &
  MINIO_PID=$!; PIDS+=("$MINIO_PID")
  wait_http "$MINIO_URL/minio/health/live" 60
  curl -fsS --aws-sigv4 "aws:amz:us-east-1:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
    -X PUT "$MINIO_URL/bench" >/dev/null
}
stop_minio() { [[ -n "$MINIO_PID" ]] && { stop_pid "$MINIO_PID"; MINIO_PID=""; }; rm -rf "$WORK/minio"; }
