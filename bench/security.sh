#!/usr/bin/env bash
# Producer and consumer throughput over PLAINTEXT vs SASL_SSL (SCRAM-SHA-512, TLS 1.3) on one
# `skiff dev`, with Kafka's own ProducerPerformance / ConsumerPerformance (docs/security.md):
#   bench/security.sh [RECORDS] [RECORD_BYTES]        (default 100000 x 1024)
# Env: SKIFF_BIN (default $CARGO_TARGET_DIR/release/skiff, else .../debug/skiff), SKIFF_CACHE,
#      ROUNDS (default 2; the listeners alternate within each round).
# Prints one line per run; compare the MB/sec columns. Certificates are made in a temp dir.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${SKIFF_CACHE:-$HOME/.cache/skiff}"
TARGET="${CARGO_TARGET_DIR:-$CACHE/target}"
BIN="${SKIFF_BIN:-$TARGET/release/skiff}"
[ -x "$BIN" ] || BIN="$TARGET/debug/skiff"
N="${1:-100000}"; SIZE="${2:-1024}"; ROUNDS="${ROUNDS:-2}"
LIBS="$(bash "$HERE/kafka/setup.sh" | tail -1)"
WORK="$(mktemp -d /tmp/skiff-bench-security.XXXXXX)"
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
cd "$WORK"
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
openssl req -x509 "${ec[@]}" -days 2 -keyout ca.key -out ca.pem -subj /CN=bench-ca \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
openssl req "${ec[@]}" -keyout broker.key -out broker.csr -subj /CN=localhost 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > broker.ext
openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile broker.ext \
  -out broker.pem 2>/dev/null
SKIFF_SCRAM_BOOTSTRAP_USER='bench=bench-secret' SKIFF_TLS_CERT=broker.pem SKIFF_TLS_KEY=broker.key \
  "$BIN" dev --data-dir data --kafka-listen 'PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0' \
  --http-listen 127.0.0.1:0 > skiff.out 2> skiff.err &
PID=$!
for _ in $(seq 1 150); do grep -q '^HTTP' skiff.out && break; sleep 0.2; done
grep -q '^HTTP' skiff.out || { echo "skiff did not start" >&2; tail skiff.err >&2; exit 1; }
addr() { grep "Kafka listener $1:" skiff.out | awk '{print $4}'; }
cat > sasl_ssl.properties <<P
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="bench" password="bench-secret";
ssl.truststore.type=PEM
ssl.truststore.location=$WORK/ca.pem
P
: > plaintext.properties
java_tool() { java -Xmx512m -cp "$LIBS/*" -Dlog4j2.configurationFile="$HERE/kafka/log4j2-tools.properties" "$@" 2>/dev/null; }
echo "binary: $BIN; $N records of $SIZE bytes"
for round in $(seq 1 "$ROUNDS"); do
  for l in PLAINTEXT SASL_SSL; do
    props="$(echo "$l" | tr 'A-Z' 'a-z').properties"; topic="perf-$l-$round"
    echo "$l produce: $(java_tool org.apache.kafka.tools.ProducerPerformance --topic "$topic" --num-records "$N" \
      --record-size "$SIZE" --throughput -1 --producer-props bootstrap.servers="$(addr $l)" acks=all linger.ms=5 \
      batch.size=262144 --producer.config "$props" | tail -1)"
    echo "$l consume (start, end, MB, MB/sec, records, records/sec, rebalance ms, fetch ms, fetch MB/sec, fetch records/sec): $(
      java_tool org.apache.kafka.tools.ConsumerPerformance --bootstrap-server "$(addr $l)" --topic "$topic" \
      --messages "$N" --command-config "$props" --timeout 60000 | tail -1)"
  done
done
