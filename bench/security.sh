#!/usr/bin/env bash
# Producer and consumer throughput over PLAINTEXT vs SASL_SSL (SCRAM-SHA-512, TLS 1.3) on one
# `skiff dev` and on Apache Kafka 4.4 (bench/kafka/, KRaft, its SCRAM user added at format time),
# with Kafka's own ProducerPerformance / ConsumerPerformance; then a storm of new TLS
# connections (bench/tlsconns: RATE/s for STORM_SECONDS, full handshakes + ApiVersions) while a
# producer keeps producing over an established SASL_SSL connection (docs/security.md):
#   bench/security.sh [RECORDS] [RECORD_BYTES]        (default 100000 x 1024)
# Env: SKIFF_BIN (default $CARGO_TARGET_DIR/release/skiff, else .../debug/skiff), SKIFF_CACHE,
#      ROUNDS (default 2; brokers and listeners alternate within each round), KAFKA=0 skips
#      Apache Kafka, RATE (default 1000) and STORM_SECONDS (default 5; 0 skips the storm),
#      OUT (a directory for the summary and raw lines; default: only stdout), PERF=1 profiles
#      Skiff with `perf record -g -F PERF_FREQ` (default 499) during its first PLAINTEXT and its
#      first SASL_SSL produce + fetch (reports perf-plaintext*.txt, perf-sasl-ssl*.txt in OUT).
#      CLIENT=librdkafka drives produce and fetch with librdkafka + OpenSSL (security_librdkafka.py)
#      instead of Kafka's Java tools, whose JSSE makes them the bottleneck on a small machine.
#      SYSCALLS=1 counts Skiff's socket read and write system calls per MB in each run
#      (`perf stat` on the syscalls tracepoints; syscalls.tsv in OUT).
# Prints one line per run and a summary with medians and the SASL_SSL / PLAINTEXT and Skiff /
# Kafka ratios, and the CPU each run cost: the broker's (utime + stime of its process, from
# /proc/PID/stat) and the client tool's (user + sys), in CPU milliseconds per MB of records.
# CPU per MB barely moves with the machine's load, unlike MB/s. Certificates are made in a temp
# dir; every process it starts is stopped on exit.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${SKIFF_CACHE:-$HOME/.cache/skiff}"
TARGET="${CARGO_TARGET_DIR:-$CACHE/target}"
BIN="${SKIFF_BIN:-$TARGET/release/skiff}"
[ -x "$BIN" ] || BIN="$TARGET/debug/skiff"
N="${1:-100000}"; SIZE="${2:-1024}"; ROUNDS="${ROUNDS:-2}"; RATE="${RATE:-1000}"
STORM_SECONDS="${STORM_SECONDS:-5}"; CLIENT="${CLIENT:-java}"
PY="$CACHE/compat/python-confluent/venv/bin/python"   # made by tests/compat/setup.sh
[ "$CLIENT" != librdkafka ] || [ -x "$PY" ] || { echo "CLIENT=librdkafka needs tests/compat/setup.sh" >&2; exit 1; }
LIBS="$(bash "$HERE/kafka/setup.sh" | tail -1)"
WORK="$(mktemp -d /tmp/skiff-bench-security.XXXXXX)"
PID=""; KPID=""
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null
  [ -n "$KPID" ] && kill "$KPID" 2>/dev/null
  wait 2>/dev/null; rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK"
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
openssl req -x509 "${ec[@]}" -days 2 -keyout ca.key -out ca.pem -subj /CN=bench-ca \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
openssl req "${ec[@]}" -keyout broker.key -out broker.csr -subj /CN=localhost 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > broker.ext
openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile broker.ext \
  -out broker.pem 2>/dev/null
cat broker.key broker.pem > broker-keystore.pem   # Kafka's PEM keystore: key, then certificate
# Kafka runs here without an authorizer; Skiff's is always on, so it is told to allow resources
# without ACLs (with a SASL listener it would refuse them): both brokers authorize everyone.
SKIFF_SCRAM_BOOTSTRAP_USER='bench=bench-secret' SKIFF_TLS_CERT=broker.pem SKIFF_TLS_KEY=broker.key \
  SKIFF_ALLOW_EVERYONE_IF_NO_ACL_FOUND=true \
  "$BIN" dev --data-dir data --kafka-listen 'PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0' \
  --http-listen 127.0.0.1:0 > skiff.out 2> skiff.err &
PID=$!
for _ in $(seq 1 150); do grep -q '^HTTP' skiff.out && break; sleep 0.2; done
grep -q '^HTTP' skiff.out || { echo "skiff did not start" >&2; tail skiff.err >&2; exit 1; }
declare -A ADDR BPID
BPID[skiff]="$PID"
ADDR[skiff-PLAINTEXT]="$(grep 'Kafka listener PLAINTEXT:' skiff.out | awk '{print $4}')"
ADDR[skiff-SASL_SSL]="$(grep 'Kafka listener SASL_SSL:' skiff.out | awk '{print $4}')"
brokers=(skiff)
if [ "${KAFKA:-1}" != 0 ]; then
  KPORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  KSSL=$((KPORT + 2))   # run-kafka.sh puts the controller on KPORT+1
  KAFKA_ADD_SCRAM='SCRAM-SHA-512=[name=bench,password=bench-secret]' KAFKA_EXTRA_PROPS="listeners=PLAINTEXT://127.0.0.1:$KPORT,SASL_SSL://127.0.0.1:$KSSL,CONTROLLER://127.0.0.1:$((KPORT + 1))
advertised.listeners=PLAINTEXT://127.0.0.1:$KPORT,SASL_SSL://127.0.0.1:$KSSL
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PEM
ssl.keystore.location=$WORK/broker-keystore.pem" \
    KAFKA_CONF_DIR="$WORK/kafka.conf" bash "$HERE/kafka/start-background.sh" "$KPORT" "$WORK/kafka" "$WORK/kafka.log" > kafka.pid
  KPID="$(cat kafka.pid)"
  # run-kafka.sh execs java, so this is the broker's JVM (else its java child).
  BPID[kafka]="$KPID"
  [ "$(cat "/proc/$KPID/comm")" = java ] || BPID[kafka]="$(pgrep -P "$KPID" -x java | head -1)"
  ADDR[kafka-PLAINTEXT]="127.0.0.1:$KPORT"; ADDR[kafka-SASL_SSL]="127.0.0.1:$KSSL"
  brokers+=(kafka)
fi
cat > sasl_ssl.properties <<P
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="bench" password="bench-secret";
ssl.truststore.type=PEM
ssl.truststore.location=$WORK/ca.pem
P
: > plaintext.properties
java_tool() { java -Xmx512m -cp "$LIBS/*" -Dlog4j2.configurationFile="$HERE/kafka/log4j2-tools.properties" "$@" 2>/dev/null; }
# CPU seconds (user + system, all threads) the process has used so far.
cpu_s() { awk -v t="$(getconf CLK_TCK)" '{print ($14 + $15) / t}' "/proc/$1/stat"; }
MB="$(awk -v n="$N" -v s="$SIZE" 'BEGIN {print n * s / 1e6}')"
# CPU milliseconds per MB of records between two cpu_s readings.
ms_per_mb() { awk -v a="$1" -v b="$2" -v mb="$MB" 'BEGIN {printf "%.1f", (b - a) * 1000 / mb}'; }
# Skiff's socket system calls during one phase: `count_syscalls start` / `count_syscalls stop LABEL`.
SC_PID=""
count_syscalls() {
  [ "${SYSCALLS:-0}" = 1 ] && [ "$b" = skiff ] || return 0
  if [ "$1" = start ]; then
    perf stat -x, -o "$WORK/syscalls.csv" -p "$PID" -e syscalls:sys_enter_read,syscalls:sys_enter_recvfrom \
      -e syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_sendto > /dev/null 2>&1 &
    SC_PID=$!; sleep 0.5
  else
    kill -INT "$SC_PID"; wait "$SC_PID" 2>/dev/null || true
    awk -F, -v label="$2" -v mb="$MB" '/syscalls:/ {sub("syscalls:sys_enter_", "", $3); printf "%s\t%s\t%.1f\n", label, $3, $1 / mb}' \
      "$WORK/syscalls.csv" >> syscalls.tsv
  fi
}
# Runs a client tool, its stdout's last line into $OUTPUT, its CPU ms/MB into $CLIENT_CPU.
TIMEFORMAT='%U %S'
timed_tool() {
  local t
  t="$( { time java_tool "$@" | tail -1 > tool.out; } 2>&1 )"
  OUTPUT="$(cat tool.out)"
  CLIENT_CPU="$(echo "$t" | awk -v mb="$MB" '{printf "%.1f", ($1 + $2) * 1000 / mb}')"
}
echo "binary: $BIN; $N records of $SIZE bytes; brokers: ${brokers[*]}; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
: > results.tsv; : > syscalls.tsv
for round in $(seq 1 "$ROUNDS"); do
  for b in "${brokers[@]}"; do
    for l in PLAINTEXT SASL_SSL; do
      props="$(echo "$l" | tr 'A-Z' 'a-z').properties"; topic="perf-$l-$round"; addr="${ADDR[$b-$l]}"
      PERF_PID=""; perf_name=""
      if [ "${PERF:-0}" = 1 ] && [ "$round" = 1 ] && [ "$b" = skiff ]; then
        perf_name="perf-$(echo "$l" | tr 'A-Z_' 'a-z-')"
        perf record -F "${PERF_FREQ:-499}" -g -p "$PID" -o "$WORK/perf.data" > /dev/null 2>&1 &
        PERF_PID=$!
      fi
      [ "$CLIENT" = librdkafka ] || java_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$addr" \
        --command-config "$props" --create --topic "$topic" --partitions 3 --replication-factor 1 > /dev/null
      c0="$(cpu_s "${BPID[$b]}")"; count_syscalls start
      if [ "$CLIENT" = librdkafka ]; then
        # One line "<MB/s> <client CPU ms/MB>" per phase (security_librdkafka.py).
        read -r p_mbs CLIENT_CPU < <("$PY" "$HERE/security_librdkafka.py" "$addr" "$l" "$topic-rdk" "$N" "$SIZE" produce)
        [ -n "${p_mbs:-}" ] || { echo "$b $l: librdkafka produce failed" >&2; exit 1; }
        c1="$(cpu_s "${BPID[$b]}")"; count_syscalls stop "$b $l produce"; count_syscalls start
        echo "$b $l produce (librdkafka): $p_mbs MB/s (broker CPU $(ms_per_mb "$c0" "$c1") ms/MB, client $CLIENT_CPU ms/MB)"
        echo -e "$b\t$l\tproduce\t$p_mbs\t$(ms_per_mb "$c0" "$c1")\t$CLIENT_CPU" >> results.tsv
        read -r f_mbs CLIENT_CPU < <("$PY" "$HERE/security_librdkafka.py" "$addr" "$l" "$topic-rdk" "$N" "$SIZE" consume)
        [ -n "${f_mbs:-}" ] || { echo "$b $l: librdkafka consume failed" >&2; exit 1; }
        c2="$(cpu_s "${BPID[$b]}")"; count_syscalls stop "$b $l fetch"
        echo "$b $l fetch (librdkafka): $f_mbs MB/s (broker CPU $(ms_per_mb "$c1" "$c2") ms/MB, client $CLIENT_CPU ms/MB)"
        echo -e "$b\t$l\tfetch\t$f_mbs\t$(ms_per_mb "$c1" "$c2")\t$CLIENT_CPU" >> results.tsv
      else
        timed_tool org.apache.kafka.tools.ProducerPerformance --topic "$topic" --num-records "$N" \
          --record-size "$SIZE" --throughput -1 --producer-props bootstrap.servers="$addr" acks=all linger.ms=5 \
          batch.size=262144 --producer.config "$props"
        p="$OUTPUT"; c1="$(cpu_s "${BPID[$b]}")"; count_syscalls stop "$b $l produce"; count_syscalls start
        echo "$b $l produce: $p (broker CPU $(ms_per_mb "$c0" "$c1") ms/MB, client $CLIENT_CPU ms/MB)"
        # "N records sent, R records/sec (M MB/sec), ..."
        echo -e "$b\t$l\tproduce\t$(echo "$p" | sed -n 's/.*(\([0-9.]*\) MB\/sec).*/\1/p')\t$(ms_per_mb "$c0" "$c1")\t$CLIENT_CPU" >> results.tsv
        timed_tool org.apache.kafka.tools.ConsumerPerformance --bootstrap-server "$addr" --topic "$topic" \
          --messages "$N" --command-config "$props" --timeout 60000
        c="$OUTPUT"; c2="$(cpu_s "${BPID[$b]}")"; count_syscalls stop "$b $l fetch"
        echo "$b $l consume (start, end, MB, MB/sec, records, records/sec, rebalance ms, fetch ms, fetch MB/sec, fetch records/sec): $c (broker CPU $(ms_per_mb "$c1" "$c2") ms/MB, client $CLIENT_CPU ms/MB)"
        echo -e "$b\t$l\tfetch\t$(echo "$c" | awk -F', *' '{print $9}')\t$(ms_per_mb "$c1" "$c2")\t$CLIENT_CPU" >> results.tsv
      fi
      if [ -n "$PERF_PID" ]; then
        kill -INT "$PERF_PID"; wait "$PERF_PID" 2>/dev/null || true
        perf report -i "$WORK/perf.data" --stdio --no-children --sort dso,symbol --percent-limit 1 2>/dev/null \
          | grep -v '^$' | grep -E '^ +[0-9]|^# Samples' | head -40 > "$perf_name.txt" || true
        perf report -i "$WORK/perf.data" --stdio --no-children --sort dso --percent-limit 0.5 2>/dev/null \
          | grep -E '^ +[0-9]' | head -20 > "$perf_name-dso.txt" || true
      fi
    done
  done
done
summary="$(python3 - results.tsv <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
m, cpu = {}, {}
for b, l, k, v, broker_cpu, client_cpu in rows:
    if v:
        m.setdefault((b, l, k), []).append(float(v))
    cpu.setdefault((b, l, k), []).append((float(broker_cpu), float(client_cpu)))
med = {key: statistics.median(v) for key, v in m.items()}
def c(b, l, k, i):
    v = cpu.get((b, l, k))
    return f"{statistics.median(x[i] for x in v):.1f}" if v else "n/a"
print("| broker | listener | produce MB/s | fetch MB/s | broker CPU ms/MB produce / fetch | client CPU ms/MB produce / fetch |")
print("|---|---|---|---|---|---|")
for b in ("skiff", "kafka"):
    for l in ("PLAINTEXT", "SASL_SSL"):
        if (b, l, "produce") in med:
            print(f"| {b} | {l} | {med[(b, l, 'produce')]:.1f} | {med.get((b, l, 'fetch'), float('nan')):.1f} "
                  f"| {c(b, l, 'produce', 0)} / {c(b, l, 'fetch', 0)} | {c(b, l, 'produce', 1)} / {c(b, l, 'fetch', 1)} |")
for k in ("produce", "fetch"):
    s, p, kf = med.get(("skiff", "SASL_SSL", k)), med.get(("skiff", "PLAINTEXT", k)), med.get(("kafka", "SASL_SSL", k))
    line = f"{k}: skiff SASL_SSL / PLAINTEXT = {s / p:.2f} (target >= 0.8)" if s and p else f"{k}: n/a"
    if s and kf:
        line += f"; skiff / kafka over SASL_SSL = {s / kf:.2f} (target >= 1)"
    print(line)
PY
)"
summary+=$'\n'"load average at start: $LOAD_START; at end of the throughput runs: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$summary"
storm=""
if [ "$STORM_SECONDS" != 0 ]; then
  tool="$CACHE/bench/tlsconns"
  (cd "$HERE/tlsconns" && GOFLAGS=-mod=mod go build -o "$tool" .)
  for b in "${brokers[@]}"; do
    a="${ADDR[$b-SASL_SSL]}"
    out="$("$tool" -connect "$a" -ca ca.pem -rate "$RATE" -seconds "$STORM_SECONDS" -produce "$a" \
      -user bench -password bench-secret -topic "storm-$b" || true)"
    storm+="$b: $out"$'\n'
  done
  echo "$storm"
fi
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  { echo "binary: $BIN; $N records of $SIZE bytes; rounds $ROUNDS; client $CLIENT"; echo; echo "$summary"; echo; echo "$storm"; } > "$OUT/summary.md"
  cp results.tsv "$OUT/results.tsv"
  for f in perf-*.txt; do [ -f "$f" ] && cp "$f" "$OUT/"; done
  if [ -s syscalls.tsv ]; then cp syscalls.tsv "$OUT/"; fi
fi
