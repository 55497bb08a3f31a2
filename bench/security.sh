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
#      Skiff with `perf record -g` during its first SASL_SSL produce + fetch (report in OUT).
# Prints one line per run and a summary with medians and the SASL_SSL / PLAINTEXT and Skiff /
# Kafka ratios. Certificates are made in a temp dir; every process it starts is stopped on exit.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${SKIFF_CACHE:-$HOME/.cache/skiff}"
TARGET="${CARGO_TARGET_DIR:-$CACHE/target}"
BIN="${SKIFF_BIN:-$TARGET/release/skiff}"
[ -x "$BIN" ] || BIN="$TARGET/debug/skiff"
N="${1:-100000}"; SIZE="${2:-1024}"; ROUNDS="${ROUNDS:-2}"; RATE="${RATE:-1000}"
STORM_SECONDS="${STORM_SECONDS:-5}"
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
declare -A ADDR
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
echo "binary: $BIN; $N records of $SIZE bytes; brokers: ${brokers[*]}; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
: > results.tsv
for round in $(seq 1 "$ROUNDS"); do
  for b in "${brokers[@]}"; do
    for l in PLAINTEXT SASL_SSL; do
      props="$(echo "$l" | tr 'A-Z' 'a-z').properties"; topic="perf-$l-$round"; addr="${ADDR[$b-$l]}"
      PERF_PID=""
      if [ "${PERF:-0}" = 1 ] && [ "$round" = 1 ] && [ "$b-$l" = skiff-SASL_SSL ]; then
        perf record -F 499 -g -p "$PID" -o "$WORK/perf.data" > /dev/null 2>&1 &
        PERF_PID=$!
      fi
      java_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$addr" --command-config "$props" \
        --create --topic "$topic" --partitions 3 --replication-factor 1 > /dev/null
      p="$(java_tool org.apache.kafka.tools.ProducerPerformance --topic "$topic" --num-records "$N" \
        --record-size "$SIZE" --throughput -1 --producer-props bootstrap.servers="$addr" acks=all linger.ms=5 \
        batch.size=262144 --producer.config "$props" | tail -1)"
      echo "$b $l produce: $p"
      # "N records sent, R records/sec (M MB/sec), ..."
      echo -e "$b\t$l\tproduce\t$(echo "$p" | sed -n 's/.*(\([0-9.]*\) MB\/sec).*/\1/p')" >> results.tsv
      c="$(java_tool org.apache.kafka.tools.ConsumerPerformance --bootstrap-server "$addr" --topic "$topic" \
        --messages "$N" --command-config "$props" --timeout 60000 | tail -1)"
      echo "$b $l consume (start, end, MB, MB/sec, records, records/sec, rebalance ms, fetch ms, fetch MB/sec, fetch records/sec): $c"
      echo -e "$b\t$l\tfetch\t$(echo "$c" | awk -F', *' '{print $9}')" >> results.tsv
      if [ -n "$PERF_PID" ]; then
        kill -INT "$PERF_PID"; wait "$PERF_PID" 2>/dev/null || true
        perf report -i "$WORK/perf.data" --stdio --no-children --sort dso,symbol --percent-limit 1 2>/dev/null \
          | grep -v '^$' | grep -E '^ +[0-9]' | head -40 > perf-sasl-ssl.txt || true
        perf report -i "$WORK/perf.data" --stdio --no-children --sort dso --percent-limit 0.5 2>/dev/null \
          | grep -E '^ +[0-9]' | head -20 > perf-sasl-ssl-dso.txt || true
      fi
    done
  done
done
summary="$(python3 - results.tsv <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
m = {}
for b, l, k, v in rows:
    if v:
        m.setdefault((b, l, k), []).append(float(v))
med = {key: statistics.median(v) for key, v in m.items()}
print("| broker | listener | produce MB/s | fetch MB/s |")
print("|---|---|---|---|")
for b in ("skiff", "kafka"):
    for l in ("PLAINTEXT", "SASL_SSL"):
        if (b, l, "produce") in med:
            print(f"| {b} | {l} | {med[(b, l, 'produce')]:.1f} | {med.get((b, l, 'fetch'), float('nan')):.1f} |")
for k in ("produce", "fetch"):
    s, p, kf = med.get(("skiff", "SASL_SSL", k)), med.get(("skiff", "PLAINTEXT", k)), med.get(("kafka", "SASL_SSL", k))
    line = f"{k}: skiff SASL_SSL / PLAINTEXT = {s / p:.2f} (target >= 0.8)" if s and p else f"{k}: n/a"
    if s and kf:
        line += f"; skiff / kafka over SASL_SSL = {s / kf:.2f} (target >= 1)"
    print(line)
PY
)"
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
  { echo "binary: $BIN; $N records of $SIZE bytes; rounds $ROUNDS"; echo; echo "$summary"; echo; echo "$storm"; } > "$OUT/summary.md"
  cp results.tsv "$OUT/results.tsv"
  if [ -f perf-sasl-ssl.txt ]; then cp perf-sasl-ssl.txt perf-sasl-ssl-dso.txt "$OUT/"; fi
fi
