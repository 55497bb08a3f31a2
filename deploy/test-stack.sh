#!/usr/bin/env bash
# The Docker part of scripts/test.sh: the compose cluster and the testcontainers path of the
# MinIO tests, on a real Docker engine, with images built locally (no registry needed).
#
#   deploy/test-stack.sh
#
# 1. Docker: installs Debian's docker.io when dockerd is missing, and the Compose v2 CLI plugin
#    (built from the Go module proxy into $SKIFF_CACHE) when `docker compose` is missing;
#    starts dockerd when no engine answers, and stops what it started at the end.
# 2. deploy/images-offline.sh builds every image.
# 3. The compose cluster, exactly as the README's Docker section runs it: `up`, wait for every
#    service's health; the README's quick-start client through 127.0.0.1:19092; idempotent
#    produce while the broker leading the partition is `docker kill`ed (nothing acknowledged
#    lost, produce resumes); `docker compose stop` and `start` of the whole stack and every
#    record read back; `docker compose down -v`.
# 4. tests/minio.rs with `--features testcontainers` and SKIFF_TEST_MINIO=docker: the shared
#    MinIO is testcontainers' MinIO module on the locally built image.
#
# Network rules: every published port is on 127.0.0.1 (checked); the containers are on the
# project's network only, which does not masquerade their traffic (compose file; checked), so
# they reach each other and nothing beyond; a dockerd started here publishes on 127.0.0.1 by
# default (--ip) and does not masquerade on its default bridge either (--ip-masq=false: the
# testcontainers MinIO). Every container,
# network and volume started here is removed at the end, also on failure. When the engine
# cannot start (no cgroups, no overlay, ...), this says so in one line and fails.
#
#   SKIFF_CACHE       default ~/.cache/skiff (debootstrap tarball, mc and compose binaries)
#   SKIFF_BIN         the skiff binary for the image (default $CARGO_TARGET_DIR/debug/skiff)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
export SKIFF_CACHE="${SKIFF_CACHE:-$HOME/.cache/skiff}"
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0
compose=(docker compose -f deploy/docker-compose.yml)
python="$SKIFF_CACHE/compat/python-kafka/venv/bin/python"  # kafka-python: tests/compat/setup.sh
work="$(mktemp -d /tmp/skiff-test-stack.XXXXXX)"
started=$SECONDS
say() { printf 'test-stack: %s\n' "$*"; }
die() { printf 'test-stack: FAIL: %s\n' "$*" >&2; exit 1; }

# ---- cleanup: whatever this script started, also on failure
dockerd_pid=""
stack_up=0
cleanup() {
  local rc=$?
  set +e
  if [ "$stack_up" = 1 ]; then
    [ "$rc" = 0 ] || { say "logs of the failed stack (tail):"; "${compose[@]}" logs --no-color --tail 30 2>&1 | tail -150; }
    "${compose[@]}" down -v --remove-orphans --timeout 10 >/dev/null 2>&1
  fi
  if docker info >/dev/null 2>&1; then
    # testcontainers' MinIO (its own watchdog normally removes it when the test process exits).
    ids="$(docker ps -aq --filter label=org.testcontainers.managed-by=testcontainers)"
    if [ -n "$ids" ]; then
      # Named explicitly: if the watchdog's own `docker rm` is under way, ours fails and its
      # anonymous /data volume could outlive it.
      vols="$(docker inspect -f '{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}} {{end}}{{end}}' $ids 2>/dev/null)"
      docker rm -f -v $ids >/dev/null 2>&1
      sleep 1
      [ -z "${vols// /}" ] || docker volume rm -f $vols >/dev/null 2>&1
    fi
    left="$(docker ps -aq --filter label=com.docker.compose.project=skiff)"
    [ -z "$left" ] || { say "containers left behind: $left" >&2; rc=1; }
  fi
  if [ -n "$dockerd_pid" ]; then
    kill "$dockerd_pid" 2>/dev/null
    for _ in $(seq 60); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$dockerd_pid" 2>/dev/null
    say "stopped the dockerd started here"
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- 1. the engine and the Compose plugin
if ! command -v dockerd >/dev/null 2>&1 && ! docker info >/dev/null 2>&1; then
  say "installing Docker (Debian's docker.io)"
  apt_install() { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends docker.io >/dev/null; }
  apt_install || { apt-get -o DPkg::Lock::Timeout=300 update -qq && apt_install; } || die "apt-get install docker.io failed"
fi
command -v docker >/dev/null 2>&1 || die "no docker client after installing docker.io"
if ! docker compose version >/dev/null 2>&1; then
  # Not a Debian package (Debian has only the Python docker-compose v1): built from its Go
  # module, which has exclude directives, so `go install pkg@version` refuses it; the module is
  # downloaded and built in place.
  ver=v2.40.3
  bin="$SKIFF_CACHE/go-bin/compose-$ver/docker-compose"
  if [ ! -x "$bin" ]; then
    command -v go >/dev/null 2>&1 || die "Go is required to build the Compose v2 plugin"
    say "building Docker Compose $ver from the Go module proxy (several minutes, once)"
    dir="$(go mod download -json "github.com/docker/compose/v2@$ver" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
    [ -d "$dir" ] || die "go mod download github.com/docker/compose/v2@$ver gave no directory"
    mkdir -p "$(dirname "$bin")"
    (cd "$dir" && go build -trimpath -ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=$ver" -o "$bin.tmp" ./cmd)
    mv "$bin.tmp" "$bin"
  fi
  mkdir -p /usr/local/lib/docker/cli-plugins
  install -m 0755 "$bin" /usr/local/lib/docker/cli-plugins/docker-compose
fi

if ! docker info >/dev/null 2>&1; then
  say "starting dockerd"
  dockerd --ip=127.0.0.1 --ip-masq=false --pidfile "$work/dockerd.pid" >"$work/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$dockerd_pid" 2>/dev/null || break
    sleep 0.5
  done
  if ! docker info >/dev/null 2>&1; then
    cp "$work/dockerd.log" "$SKIFF_CACHE/dockerd.log" 2>/dev/null || true
    reason="$(grep -i -E 'level=(fatal|error)|failed' "$work/dockerd.log" | tail -1 | sed 's/.*msg="\([^"]*\)".*/\1/' || true)"
    kill "$dockerd_pid" 2>/dev/null || true
    wait "$dockerd_pid" 2>/dev/null || true
    dockerd_pid=""
    die "the Docker engine cannot start on this machine (dockerd: ${reason:-no answer within 30 s}; log $SKIFF_CACHE/dockerd.log); the compose and testcontainers tests need one"
  fi
else
  # An engine that was already running: it must publish ports on loopback by default, since
  # testcontainers publishes MinIO's ports without an address.
  bind="$(docker network inspect bridge -f '{{index .Options "com.docker.network.bridge.host_binding_ipv4"}}' 2>/dev/null || true)"
  [ "$bind" = 127.0.0.1 ] || die "the running Docker engine publishes ports on ${bind:-0.0.0.0} by default; restart dockerd with --ip=127.0.0.1 (or stop it and let this script start one)"
fi
say "engine: $(docker info -f 'Docker {{.ServerVersion}}, {{.Driver}}, cgroup {{.CgroupDriver}}'), $(docker compose version)"

# What exists before the tests: the same must exist after them (nothing they start is left).
inventory() {
  { docker ps -aq --no-trunc; docker network ls -q --no-trunc; docker volume ls -q; } | sort
}
inventory >"$work/before"

# Every published port must be on 127.0.0.1.
check_ports() {
  local bad
  bad="$(docker ps --format '{{.Ports}}' | grep -oE '[^ ,]+:[0-9]+->' | grep -v '^127\.0\.0\.1:' || true)"
  [ -z "$bad" ] || die "ports published beyond 127.0.0.1: $bad"
}

# Waits (bounded) until every long-running service of the stack reports healthy.
wait_healthy() {
  local deadline=$((SECONDS + $1)) states
  while :; do
    states="$("${compose[@]}" ps --format '{{.Service}}={{.Health}}' | sort | tr '\n' ' ')"
    if [ "$(printf '%s' "$states" | tr ' ' '\n' | grep -c '=healthy$')" = 7 ]; then return 0; fi
    [ "$SECONDS" -lt "$deadline" ] || die "not healthy within $1 s: $states"
    sleep 1
  done
}

[ -x "$python" ] || die "kafka-python venv missing at $python: run tests/compat/setup.sh"
# Published on 127.0.0.1, as the README runs it (the compose file would use this address).
unset SKIFF_HOST_IP

# The README's Docker section must show the commands run here.
docker_section="$(sed -n '/^## A local cluster: MinIO in Docker/,/^## /p' README.md)"
for cmd in "deploy/images-offline.sh" "docker compose -f deploy/docker-compose.yml up -d --no-build --wait" \
  "docker compose -f deploy/docker-compose.yml stop" "docker compose -f deploy/docker-compose.yml down -v" "docker kill"; do
  grep -qF -- "$cmd" <<<"$docker_section" || die "README.md's Docker section no longer shows \`$cmd\`, which this test runs"
done

# The image run here must be configured as the published one: Dockerfile.offline repeats the
# runtime stage of Dockerfile (user, directories, environment, ports, probe, entrypoint).
runtime_config() {
  sed -e '/^#/d' -e ':a;/\\$/{N;s/\\\n */ /;ba}' \
    | grep -E '^(USER|WORKDIR|VOLUME|ENV|EXPOSE|HEALTHCHECK|ENTRYPOINT|CMD) ' | sed 's/  */ /g'
}
diff <(sed -n '/^FROM .* AS runtime$/,$p' deploy/Dockerfile | runtime_config) <(runtime_config <deploy/Dockerfile.offline) \
  || die "deploy/Dockerfile.offline's image configuration differs from deploy/Dockerfile's runtime stage (above)"

# ---- 2. images
t=$SECONDS
deploy/images-offline.sh
image_s=$((SECONDS - t))

# ---- 3. the compose stack: the commands of the README's Docker section
"${compose[@]}" down -v --remove-orphans --timeout 10 >/dev/null 2>&1 || true
stack_up=1
t=$SECONDS
"${compose[@]}" up -d --no-build --wait --wait-timeout 180 >"$work/up.log" 2>&1 || { cat "$work/up.log"; die "docker compose up"; }
wait_healthy 60
up_s=$((SECONDS - t))
say "stack healthy in $up_s s"
check_ports
# Only the project's network, and no way out of it.
nets="$(docker inspect -f '{{range $n, $_ := .NetworkSettings.Networks}}{{$n}} {{end}}' $("${compose[@]}" ps -aq) | tr ' ' '\n' | grep . | sort -u | tr '\n' ' ')"
[ "$nets" = "skiff_default " ] || die "containers on networks other than skiff_default: $nets"
masq="$(docker network inspect skiff_default -f '{{index .Options "com.docker.network.bridge.enable_ip_masquerade"}}')"
[ "$masq" = false ] || die "skiff_default masquerades container traffic (enable_ip_masquerade=$masq)"

# The README's quick-start client, verbatim but for the address.
sed -n "/^## One-minute quick start/,/^## /p" README.md | sed -n "/^python3 - <<'PY'$/,/^PY$/p" | sed '1d;$d' \
  | sed 's/127\.0\.0\.1:9092/127.0.0.1:19092/g' >"$work/quickstart.py"
grep -q 19092 "$work/quickstart.py" || die "no quick-start client found in README.md"
timeout 60 "$python" "$work/quickstart.py" | tee "$work/quickstart.out"
grep -qx "2 b'k2' b'record 2'" "$work/quickstart.out" || die "the quick-start client did not read back its 3 records"

timeout 180 "$python" deploy/test-stack.py failover "$work/acked.json" | tee "$work/failover.out"
failover_ms="$(sed -n 's/^failover_ms=//p' "$work/failover.out")"
[ -n "$failover_ms" ] || die "no failover time measured"
timeout 120 "$python" deploy/test-stack.py verify "$work/acked.json"

t=$SECONDS
"${compose[@]}" stop --timeout 30 >/dev/null 2>&1
"${compose[@]}" start >/dev/null 2>&1
wait_healthy 120
restart_s=$((SECONDS - t))
say "stop + start of the whole stack: healthy again in $restart_s s"
check_ports
timeout 120 "$python" deploy/test-stack.py verify "$work/acked.json"
timeout 60 "$python" "$work/quickstart.py" >"$work/quickstart2.out"
grep -qx "2 b'k2' b'record 2'" "$work/quickstart2.out" || die "the quick-start records are gone after stop/start"

# The SASL_SSL variant (deploy/docker-compose.sasl-ssl.yml): the brokers are recreated with a
# SASL_SSL listener, the one-shot certs service makes a CA into $work/certs, and kafka-python
# produces and consumes over SASL_SSL with SCRAM-SHA-512 as README's "over SASL_SSL" shows.
t=$SECONDS
SKIFF_ADMIN_PASSWORD="$(openssl rand -hex 16)"; export SKIFF_ADMIN_PASSWORD
export SKIFF_CERTS_DIR="$work/certs"
mkdir -p "$SKIFF_CERTS_DIR"
sasl=("${compose[@]}" -f deploy/docker-compose.sasl-ssl.yml)
"${sasl[@]}" up -d --no-build --wait --wait-timeout 180 >"$work/up-sasl.log" 2>&1 \
  || { cat "$work/up-sasl.log"; die "docker compose up (SASL_SSL variant)"; }
check_ports
timeout 120 "$python" deploy/test-stack.py sasl-ssl "$SKIFF_CERTS_DIR/ca.pem"
sasl_s=$((SECONDS - t))

# With the overlay's files, so its one-shot `certs` container goes too.
"${sasl[@]}" down -v --remove-orphans --timeout 10 >/dev/null 2>&1
stack_up=0
[ -z "$(docker volume ls -q --filter label=com.docker.compose.project=skiff)" ] || die "volumes left after down -v"
[ -z "$(docker network ls -q --filter label=com.docker.compose.project=skiff)" ] || die "networks left after down -v"

# ---- 4. the MinIO tests through testcontainers
t=$SECONDS
SKIFF_TEST_MINIO=docker cargo test --locked --features testcontainers --test minio -- --test-threads=2
tc_s=$((SECONDS - t))
# Its watchdog removes the MinIO container (and its volume) once the test process is gone.
for _ in $(seq 30); do
  [ -n "$(docker ps -aq --filter label=org.testcontainers.managed-by=testcontainers)" ] || break
  sleep 0.5
done
[ -z "$(docker ps -aq --filter label=org.testcontainers.managed-by=testcontainers)" ] || die "the MinIO container outlived the tests by 15 s"

inventory >"$work/after"
left="$(comm -13 "$work/before" "$work/after")"
[ -z "$left" ] || die "containers, networks or volumes left behind: $(echo $left)"

say "timings: images $image_s s, stack up $up_s s, failover ${failover_ms} ms (kill -> first ack after), stop+start $restart_s s, SASL_SSL variant $sasl_s s, testcontainers MinIO tests $tc_s s, total $((SECONDS - started)) s"
