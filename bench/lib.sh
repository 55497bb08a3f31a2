# Shell helpers shared by bench/run.sh and bench/compaction.sh (sourced; the caller defines
# `log`). Every wait is bounded.

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
