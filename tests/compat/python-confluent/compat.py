#!/usr/bin/env python3
"""Skiff client-compatibility scenario for confluent-kafka (librdkafka).

See tests/compat/README.md for the scenario. Environment: BOOTSTRAP, TOPIC, MODE, RECORDS.
"""
import os
import sys
import threading
import time

import confluent_kafka
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

CLIENT = "python-confluent"
WATCHDOG_SECS = 240
PARTITIONS = 3
BASE_TS = 1700000000000
SIZES = [0, 1, 17, 100, 1000, 5000, 20000]
# The client's default codec first, then gzip, snappy, lz4, zstd.
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
# librdkafka's default is enable.idempotence=false; this block exercises the idempotent producer.
IDEMPOTENT_CODEC = "zstd"
# Byte j of value i is (i*31 + j) % 251: a slice of this pattern, starting at (i*31) % 251.
_PATTERN = bytes(k % 251 for k in range(251 + max(SIZES)))


def log(msg):
    print(f"[{CLIENT}] {msg}", flush=True)


def fail(msg):
    print(f"[{CLIENT}] FAIL: {msg}", file=sys.stderr, flush=True)
    os._exit(1)


def key_of(i):
    return f"key-{i}".encode()


def value_of(i):
    start = (i * 31) % 251
    return _PATTERN[start:start + SIZES[i % 7]]


def headers_of(i):
    return [("idx", str(i).encode()), ("kind", b"compat")]


def partition_count(records, p):
    """Number of records i < records with i % 3 == p."""
    return (records - p + PARTITIONS - 1) // PARTITIONS if records > p else 0


def codec_of(i, records):
    return CODECS[i * len(CODECS) // records]


# Security settings from the environment (tests/security.rs): each COMPAT_<NAME> variable set
# becomes the librdkafka property <name> with `_` as `.`.
SECURITY = {
    "COMPAT_SECURITY_PROTOCOL": "security.protocol",
    "COMPAT_SASL_MECHANISM": "sasl.mechanism",
    "COMPAT_SASL_USERNAME": "sasl.username",
    "COMPAT_SASL_PASSWORD": "sasl.password",
    "COMPAT_SSL_CA_LOCATION": "ssl.ca.location",
    "COMPAT_SSL_CERT_LOCATION": "ssl.certificate.location",
    "COMPAT_SSL_KEY_LOCATION": "ssl.key.location",
    # KIP-392 follower fetching (tests/racks.rs): the consumer's rack.
    "COMPAT_CLIENT_RACK": "client.rack",
}


def with_debug(conf):
    """COMPAT_DEBUG=<librdkafka debug contexts> (e.g. protocol,broker) turns on librdkafka debug logs.
    Also adds the security settings given in the environment (SECURITY)."""
    if os.environ.get("COMPAT_DEBUG"):
        conf["debug"] = os.environ["COMPAT_DEBUG"]
    for var, prop in SECURITY.items():
        if os.environ.get(var):
            conf[prop] = os.environ[var]
    # OAUTHBEARER (tests/oauthbearer.rs): the test signs the token; the callback hands it over
    # with its expiry (COMPAT_OAUTH_EXPIRY, seconds since the epoch).
    if os.environ.get("COMPAT_OAUTH_TOKEN"):
        token = os.environ["COMPAT_OAUTH_TOKEN"]
        expiry = float(os.environ.get("COMPAT_OAUTH_EXPIRY", time.time() + 3600))
        principal = os.environ.get("COMPAT_OAUTH_PRINCIPAL", "")
        conf["oauth_cb"] = lambda _config: (token, expiry, principal)
    return conf


def error_cb(err):
    # Global (non-partition) errors: log them; fatal ones abort.
    if err.fatal():
        fail(f"fatal client error: {err}")
    log(f"client error (non-fatal): {err}")


def create_topic(bootstrap, topic):
    admin = AdminClient(with_debug({"bootstrap.servers": bootstrap, "error_cb": error_cb}))
    # retention.ms=-1: the fixed 2023 create-timestamps would otherwise be past a 7-day
    # time-based retention and could be deleted between `produce` and `verify`.
    nt = NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1, config={"retention.ms": "-1"})
    futures = admin.create_topics([nt], operation_timeout=30, request_timeout=30)
    try:
        futures[topic].result(timeout=60)
    except Exception as e:  # KafkaException wrapping a KafkaError
        fail(f"create_topics({topic}, partitions={PARTITIONS}, rf=1) failed: {e}")
    # Wait until metadata shows all partitions with a leader.
    deadline = time.time() + 60
    while True:
        md = admin.list_topics(topic=topic, timeout=10)
        tmd = md.topics.get(topic)
        if tmd is not None and tmd.error is None and len(tmd.partitions) == PARTITIONS and all(
            pm.leader >= 0 and pm.error is None for pm in tmd.partitions.values()
        ):
            break
        if time.time() > deadline:
            fail(f"topic {topic}: metadata did not show {PARTITIONS} partitions with leaders: {tmd and tmd.partitions}")
        time.sleep(0.2)
    log(f"created topic {topic} with {PARTITIONS} partitions")


def produce(bootstrap, topic, records):
    failures = []
    delivered = [0]
    for codec in CODECS:
        block = [i for i in range(records) if codec_of(i, records) == codec]
        if not block:
            continue
        conf = {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "compression.type": codec,
            "linger.ms": 5,
            "error_cb": error_cb,
        }
        if codec == IDEMPOTENT_CODEC:
            conf["enable.idempotence"] = True
        producer = Producer(with_debug(conf))

        def make_cb(i):
            def cb(err, msg):
                p = i % PARTITIONS
                if err is not None:
                    failures.append(f"record {i} (partition {p}, codec {codec}): delivery failed: {err}")
                    return
                delivered[0] += 1
                if msg.partition() != p or msg.offset() != i // PARTITIONS:
                    failures.append(
                        f"record {i} (codec {codec}): delivered to partition {msg.partition()} offset "
                        f"{msg.offset()}, expected partition {p} offset {i // PARTITIONS}"
                    )
            return cb

        t0 = time.time()
        for i in block:
            while True:
                try:
                    producer.produce(
                        topic,
                        value=value_of(i),
                        key=key_of(i),
                        partition=i % PARTITIONS,
                        timestamp=BASE_TS + i,
                        headers=headers_of(i),
                        on_delivery=make_cb(i),
                    )
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
            if failures:
                fail(failures[0])
        remaining = producer.flush(120)
        if remaining:
            fail(f"codec {codec}: {remaining} records still undelivered after flush(120s)")
        if failures:
            fail(f"{len(failures)} delivery problem(s); first: {failures[0]}")
        log(
            f"produced block codec={codec} idempotent={codec == IDEMPOTENT_CODEC} records {block[0]}..{block[-1]} "
            f"({len(block)}) in {time.time() - t0:.2f}s"
        )
    if delivered[0] != records:
        fail(f"delivered {delivered[0]} records, expected {records}")
    return records


def check_record(msg, p, expect_offset, records):
    if msg.offset() != expect_offset:
        fail(f"partition {p}: got offset {msg.offset()}, expected {expect_offset} (offsets must be gapless from 0)")
    i = PARTITIONS * expect_offset + p
    if i >= records:
        fail(f"partition {p} offset {expect_offset}: unexpected record beyond the {partition_count(records, p)} produced")
    where = f"partition {p} offset {expect_offset} (record {i})"
    if msg.key() != key_of(i):
        fail(f"{where}: key {msg.key()!r}, expected {key_of(i)!r}")
    val = msg.value()
    if val is None:
        fail(f"{where}: value is null, expected {SIZES[i % 7]} bytes")
    if val != value_of(i):
        exp = value_of(i)
        if len(val) != len(exp):
            fail(f"{where}: value length {len(val)}, expected {len(exp)}")
        j = next(j for j in range(len(exp)) if val[j] != exp[j])
        fail(f"{where}: value byte {j} is {val[j]}, expected {exp[j]}")
    hdrs = msg.headers() or []
    hdrs = [(k, bytes(v) if v is not None else None) for k, v in hdrs]
    if hdrs != headers_of(i):
        fail(f"{where}: headers {hdrs!r}, expected {headers_of(i)!r}")
    ts_type, ts = msg.timestamp()
    if ts_type != confluent_kafka.TIMESTAMP_CREATE_TIME:
        fail(f"{where}: timestamp type {ts_type}, expected TIMESTAMP_CREATE_TIME ({confluent_kafka.TIMESTAMP_CREATE_TIME})")
    if ts != BASE_TS + i:
        fail(f"{where}: timestamp {ts}, expected {BASE_TS + i}")


def verify(bootstrap, topic, records):
    # confluent-kafka's Consumer refuses to start without group.id ("group.id must be set"),
    # so one is set, but the consumer never subscribes and never commits: partitions are
    # assigned manually at explicit offset 0, and auto.offset.reset=error makes any offset
    # reset fatal instead of silently falling back to earliest/latest.
    consumer = Consumer(with_debug({
        "bootstrap.servers": bootstrap,
        "group.id": f"skiff-compat-unused-{topic}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",
        "enable.partition.eof": True,
        "error_cb": error_cb,
    }))
    expected = {p: partition_count(records, p) for p in range(PARTITIONS)}

    # Earliest / latest offsets (ListOffsets with -2 / -1).
    for p in range(PARTITIONS):
        lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30, cached=False)
        if lo != 0:
            fail(f"partition {p}: earliest offset {lo}, expected 0")
        if hi != expected[p]:
            fail(f"partition {p}: latest offset {hi}, expected {expected[p]}")
    log(f"watermarks ok: earliest 0, latest {[expected[p] for p in range(PARTITIONS)]}")

    t0 = time.time()
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    nxt = {p: 0 for p in range(PARTITIONS)}
    done = {p for p in range(PARTITIONS) if expected[p] == 0}
    verified = 0
    while len(done) < PARTITIONS:
        msgs = consumer.consume(num_messages=1000, timeout=1.0)
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    p = msg.partition()
                    if nxt[p] < expected[p]:
                        fail(f"partition {p}: reached end at offset {msg.offset()} after {nxt[p]} records, expected {expected[p]}")
                    continue
                if msg.topic() == topic or err.fatal():
                    fail(f"consume error on {msg.topic()} partition {msg.partition()} offset {msg.offset()}: {err}")
                log(f"consumer error (non-fatal): {err}")
                continue
            p = msg.partition()
            if msg.topic() != topic or p not in nxt:
                fail(f"unexpected message from {msg.topic()} partition {p}")
            check_record(msg, p, nxt[p], records)
            nxt[p] += 1
            verified += 1
            if nxt[p] == expected[p]:
                done.add(p)
    consumer.unassign()
    log(f"verified {verified} records (offsets, keys, values, headers, timestamps) in {time.time() - t0:.2f}s")
    if verified != records:
        fail(f"verified {verified} records, expected {records}")

    # ListOffsets by timestamp.
    queries = []  # (partition, timestamp, expected offset, description)
    for i in sorted({0, records - 1, records // 2}):
        if 0 <= i < records:
            queries.append((i % PARTITIONS, BASE_TS + i, i // PARTITIONS, f"exact timestamp of record {i}"))
    for p in range(PARTITIONS):
        n = expected[p]
        if n == 0:
            continue
        k = n // 2
        i = PARTITIONS * k + p
        # Between record i and the next record of partition p (i + 3): the next one's offset, or none.
        queries.append((p, BASE_TS + i + 1, k + 1 if k + 1 < n else -1, f"timestamp between record {i} and {i + PARTITIONS}"))
        queries.append((p, BASE_TS + records + 1000, -1, "timestamp after the last record"))
    for p, ts, want, desc in queries:
        res = consumer.offsets_for_times([TopicPartition(topic, p, ts)], timeout=30)
        if len(res) != 1 or res[0].partition != p:
            fail(f"offsets_for_times partition {p} timestamp {ts}: unexpected result {res}")
        if res[0].error is not None:
            fail(f"offsets_for_times partition {p} timestamp {ts} ({desc}): error {res[0].error}")
        if res[0].offset != want:
            fail(f"offsets_for_times partition {p} timestamp {ts} ({desc}): offset {res[0].offset}, expected {want}")
    log(f"offsets_for_times ok ({len(queries)} queries)")
    consumer.close()
    return verified


def main():
    bootstrap = os.environ.get("BOOTSTRAP", "127.0.0.1:9092")
    topic = os.environ.get("TOPIC") or fail("TOPIC must be set")
    mode = os.environ.get("MODE", "full")
    records = int(os.environ.get("RECORDS", "20000"))
    if mode not in ("full", "produce", "verify", "group", "regex", "resubscribe", "txn", "txn-rpw", "failover",
                    "failover-group"):
        fail(f"MODE must be full, produce, verify, group, regex, resubscribe, txn, txn-rpw, failover or failover-group, not {mode!r}")
    if records < 1:
        fail("RECORDS must be >= 1")

    def watchdog():
        print(f"[{CLIENT}] FAIL: watchdog: run exceeded {WATCHDOG_SECS}s", file=sys.stderr, flush=True)
        os._exit(2)

    timer = threading.Timer(WATCHDOG_SECS, watchdog)
    timer.daemon = True
    timer.start()

    log(f"confluent-kafka {confluent_kafka.__version__}, librdkafka {confluent_kafka.libversion()[0]}")
    log(f"bootstrap={bootstrap} topic={topic} mode={mode} records={records}")
    t0 = time.time()
    # The scenarios beyond full/produce/verify live in <mode>_mode.py: (module, records produced).
    scenarios = {
        "group": ("group_mode", records),
        "regex": ("regex_mode", records),
        "resubscribe": ("resubscribe_mode", records * 4),
        # RECORDS: transactions (txn) or input records (txn-rpw).
        "txn": ("txn_mode", records),
        "txn-rpw": ("txn_rpw_mode", records),
    }
    if mode == "failover":
        # Runs until stdin closes (tests/failover_clients.rs); the watchdog still bounds it.
        from failover_mode import Scenario as Failover
        partitions = int(os.environ.get("PARTITIONS", "3"))
        rate = float(os.environ.get("RATE", "500"))
        try:
            handed = Failover(bootstrap, topic, partitions, rate, with_debug({}), log).run()
        except Exception as e:
            fail(f"failover scenario: {e}")
        print(f"compat {CLIENT} ok produced={handed} verified=0", flush=True)
        os._exit(0)
    if mode == "failover-group":
        # Runs until stdin closes (tests/failover_groups.rs); the watchdog still bounds it.
        from failover_group_mode import Scenario as FailoverGroup
        try:
            consumed = FailoverGroup(bootstrap, topic, with_debug({}), log).run()
        except Exception as e:
            fail(f"failover-group scenario: {e}")
        print(f"compat {CLIENT} ok produced=0 verified={consumed}", flush=True)
        os._exit(0)
    if mode in scenarios:
        import importlib
        module, produced = scenarios[mode]
        try:
            consumed = importlib.import_module(module).Scenario(bootstrap, topic, records, log).run()
        except Exception as e:
            fail(f"{mode} scenario: {e}")
        log(f"{mode} scenario {time.time() - t0:.2f}s")
        print(f"compat {CLIENT} ok produced={produced} verified={consumed}", flush=True)
        os._exit(0)
    produced = 0
    if mode in ("full", "produce"):
        create_topic(bootstrap, topic)
        produced = produce(bootstrap, topic, records)
        log(f"produce phase {time.time() - t0:.2f}s")
    t1 = time.time()
    verified = verify(bootstrap, topic, records)
    log(f"verify phase {time.time() - t1:.2f}s; total {time.time() - t0:.2f}s")
    print(f"compat {CLIENT} ok produced={produced} verified={verified}", flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
