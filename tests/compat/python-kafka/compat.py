#!/usr/bin/env python3
"""Skiff client-compatibility scenario for kafka-python (pure Python client).

See tests/compat/README.md for the scenario. Environment: BOOTSTRAP, TOPIC, MODE, RECORDS, and the
COMPAT_SECURITY_PROTOCOL / COMPAT_SASL_* / COMPAT_SSL_* settings (SECURITY below).
COMPAT_DEBUG=1 turns on kafka-python's DEBUG logging (shows every request and its version).
"""
import logging
import os
import sys
import threading
import time

import kafka
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka import codec as kcodec
from kafka.admin import NewTopic
from kafka.errors import for_code

CLIENT = "python-kafka"
WATCHDOG_SECS = 240
PARTITIONS = 3
BASE_TS = 1700000000000
SIZES = [0, 1, 17, 100, 1000, 5000, 20000]
# The client's default (no compression) first, then gzip, snappy, lz4, zstd.
CODECS = [None, "gzip", "snappy", "lz4", "zstd"]
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
    return (records - p + PARTITIONS - 1) // PARTITIONS if records > p else 0


def codec_of(i, records):
    return CODECS[i * len(CODECS) // records]


# Security settings from the environment (tests/security_clients.rs; tests/compat/README.md):
# each COMPAT_<NAME> variable set becomes the kafka-python keyword argument named here.
SECURITY = {
    "COMPAT_SECURITY_PROTOCOL": "security_protocol",
    "COMPAT_SASL_MECHANISM": "sasl_mechanism",
    "COMPAT_SASL_USERNAME": "sasl_plain_username",
    "COMPAT_SASL_PASSWORD": "sasl_plain_password",
    "COMPAT_SSL_CA_LOCATION": "ssl_cafile",
    "COMPAT_SSL_CERT_LOCATION": "ssl_certfile",
    "COMPAT_SSL_KEY_LOCATION": "ssl_keyfile",
}


def security():
    """The keyword arguments every client of this program gets from the COMPAT_* variables."""
    kwargs = {kw: os.environ[var] for var, kw in SECURITY.items() if os.environ.get(var)}
    return kwargs


def check_codecs():
    missing = [name for name, ok in (
        ("snappy (python-snappy)", kcodec.has_snappy()),
        ("lz4 (lz4)", kcodec.has_lz4()),
        ("zstd (zstandard)", kcodec.has_zstd()),
    ) if not ok]
    if missing:
        fail(f"codec libraries missing: {', '.join(missing)}; run tests/compat/python-kafka/setup.sh")


def create_topic(bootstrap, topic):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="skiff-compat-admin", **security())
    # retention.ms=-1: the fixed 2023 create-timestamps would otherwise be past a 7-day
    # time-based retention and could be deleted between `produce` and `verify`.
    nt = NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1, topic_configs={"retention.ms": "-1"})
    resp = admin.create_topics([nt], timeout_ms=30000)
    for entry in resp.topic_errors:
        name, code = entry[0], entry[1]
        msg = entry[2] if len(entry) > 2 else ""
        if code != 0:
            fail(f"create_topics({name}, partitions={PARTITIONS}, rf=1) failed: {for_code(code).__name__} ({code}) {msg}")
    deadline = time.time() + 60
    while True:
        tmds = [t for t in admin.describe_topics([topic]) if t["topic"] == topic]
        if tmds and tmds[0]["error_code"] == 0 and len(tmds[0]["partitions"]) == PARTITIONS and all(
            pm["leader"] >= 0 and pm["error_code"] == 0 for pm in tmds[0]["partitions"]
        ):
            break
        if time.time() > deadline:
            fail(f"topic {topic}: metadata did not show {PARTITIONS} partitions with leaders: {tmds}")
        time.sleep(0.2)
    admin.close()
    log(f"created topic {topic} with {PARTITIONS} partitions")


def produce(bootstrap, topic, records):
    delivered = 0
    for codec in CODECS:
        block = [i for i in range(records) if codec_of(i, records) == codec]
        if not block:
            continue
        producer = KafkaProducer(
            bootstrap_servers=bootstrap,
            client_id=f"skiff-compat-producer-{codec or 'none'}",
            acks="all",
            compression_type=codec,
            linger_ms=5,
            batch_size=256 * 1024,
            **security(),
        )
        t0 = time.time()
        futures = []
        for i in block:
            fut = producer.send(
                topic,
                value=value_of(i),
                key=key_of(i),
                headers=headers_of(i),
                partition=i % PARTITIONS,
                timestamp_ms=BASE_TS + i,
            )
            futures.append((i, fut))
        producer.flush(timeout=120)
        for i, fut in futures:
            p = i % PARTITIONS
            if not fut.is_done:
                fail(f"record {i} (partition {p}, codec {codec}): not delivered after flush(120s)")
            if fut.failed():
                fail(f"record {i} (partition {p}, codec {codec}): delivery failed: {fut.exception!r}")
            md = fut.value
            if md.partition != p or md.offset != i // PARTITIONS:
                fail(
                    f"record {i} (codec {codec}): delivered to partition {md.partition} offset {md.offset}, "
                    f"expected partition {p} offset {i // PARTITIONS}"
                )
            delivered += 1
        producer.close(timeout=30)
        log(f"produced block codec={codec or 'none'} records {block[0]}..{block[-1]} ({len(block)}) in {time.time() - t0:.2f}s")
    if delivered != records:
        fail(f"delivered {delivered} records, expected {records}")
    return records


def check_record(rec, p, expect_offset, records):
    if rec.offset != expect_offset:
        fail(f"partition {p}: got offset {rec.offset}, expected {expect_offset} (offsets must be gapless from 0)")
    i = PARTITIONS * expect_offset + p
    if i >= records:
        fail(f"partition {p} offset {expect_offset}: unexpected record beyond the {partition_count(records, p)} produced")
    where = f"partition {p} offset {expect_offset} (record {i})"
    if rec.key != key_of(i):
        fail(f"{where}: key {rec.key!r}, expected {key_of(i)!r}")
    val = rec.value
    if val is None:
        fail(f"{where}: value is null, expected {SIZES[i % 7]} bytes")
    if val != value_of(i):
        exp = value_of(i)
        if len(val) != len(exp):
            fail(f"{where}: value length {len(val)}, expected {len(exp)}")
        j = next(j for j in range(len(exp)) if val[j] != exp[j])
        fail(f"{where}: value byte {j} is {val[j]}, expected {exp[j]}")
    hdrs = [(k, bytes(v) if v is not None else None) for k, v in (rec.headers or [])]
    if hdrs != headers_of(i):
        fail(f"{where}: headers {hdrs!r}, expected {headers_of(i)!r}")
    if rec.timestamp_type != 0:
        fail(f"{where}: timestamp type {rec.timestamp_type}, expected 0 (CreateTime)")
    if rec.timestamp != BASE_TS + i:
        fail(f"{where}: timestamp {rec.timestamp}, expected {BASE_TS + i}")


def verify(bootstrap, topic, records):
    # group_id=None: no consumer group at all (no coordinator, no commits).
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id="skiff-compat-consumer",
        group_id=None,
        enable_auto_commit=False,
        # 'none': an out-of-range position raises instead of silently resetting.
        auto_offset_reset="none",
        # kafka-python 2.3's default receive_message_max_bytes (1,000,000) is smaller than a
        # fetch response can be (fetch_max_bytes 50 MiB, 1 MiB per partition): with three full
        # partitions it drops the connection ("Invalid frame length") and refetches. Allow
        # frames up to fetch_max_bytes plus overhead instead.
        fetch_max_bytes=16 * 1024 * 1024,
        receive_message_max_bytes=17 * 1024 * 1024,
        **security(),
    )
    expected = {p: partition_count(records, p) for p in range(PARTITIONS)}
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]

    # Earliest / latest offsets (ListOffsets with -2 / -1).
    begin = consumer.beginning_offsets(tps)
    end = consumer.end_offsets(tps)
    for tp in tps:
        if begin.get(tp) != 0:
            fail(f"partition {tp.partition}: earliest offset {begin.get(tp)}, expected 0")
        if end.get(tp) != expected[tp.partition]:
            fail(f"partition {tp.partition}: latest offset {end.get(tp)}, expected {expected[tp.partition]}")
    log(f"beginning_offsets/end_offsets ok: earliest 0, latest {[expected[p] for p in range(PARTITIONS)]}")

    t0 = time.time()
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, 0)
    nxt = {p: 0 for p in range(PARTITIONS)}
    verified = 0
    last_progress = time.time()
    while any(nxt[p] < expected[p] for p in range(PARTITIONS)):
        batch = consumer.poll(timeout_ms=1000, max_records=2000)
        if batch:
            last_progress = time.time()
        elif time.time() - last_progress > 30:
            fail(f"no records for 30s; positions {nxt}, expected end offsets {expected}")
        for tp, recs in batch.items():
            if tp.topic != topic or tp.partition not in nxt:
                fail(f"unexpected records from {tp}")
            p = tp.partition
            for rec in recs:
                check_record(rec, p, nxt[p], records)
                nxt[p] += 1
                verified += 1
    # Nothing beyond the end offsets.
    for tp in tps:
        pos = consumer.position(tp)
        if pos != expected[tp.partition]:
            fail(f"partition {tp.partition}: position after reading is {pos}, expected {expected[tp.partition]}")
    log(f"verified {verified} records (offsets, keys, values, headers, timestamps) in {time.time() - t0:.2f}s")
    if verified != records:
        fail(f"verified {verified} records, expected {records}")

    # ListOffsets by timestamp.
    queries = []  # (partition, timestamp, expected offset or None, description)
    for i in sorted({0, records - 1, records // 2}):
        queries.append((i % PARTITIONS, BASE_TS + i, i // PARTITIONS, f"exact timestamp of record {i}"))
    for p in range(PARTITIONS):
        n = expected[p]
        if n == 0:
            continue
        k = n // 2
        i = PARTITIONS * k + p
        queries.append((p, BASE_TS + i + 1, k + 1 if k + 1 < n else None, f"timestamp between record {i} and {i + PARTITIONS}"))
        queries.append((p, BASE_TS + records + 1000, None, "timestamp after the last record"))
    for p, ts, want, desc in queries:
        tp = TopicPartition(topic, p)
        res = consumer.offsets_for_times({tp: ts})
        got = res.get(tp)
        got_off = None if got is None else got.offset
        if got_off != want:
            fail(f"offsets_for_times partition {p} timestamp {ts} ({desc}): offset {got_off}, expected {want}")
        if got is not None and got.timestamp != BASE_TS + PARTITIONS * want + p:
            fail(f"offsets_for_times partition {p} timestamp {ts} ({desc}): returned timestamp {got.timestamp}, "
                 f"expected {BASE_TS + PARTITIONS * want + p}")
    # All partitions in one call too.
    res = consumer.offsets_for_times({tp: BASE_TS for tp in tps})
    for tp in tps:
        want = 0 if expected[tp.partition] else None
        got = res.get(tp)
        if (None if got is None else got.offset) != want:
            fail(f"offsets_for_times (all partitions) partition {tp.partition} timestamp {BASE_TS}: {got}, expected offset {want}")
    log(f"offsets_for_times ok ({len(queries) + 1} calls)")
    consumer.close()
    return verified


def main():
    bootstrap = os.environ.get("BOOTSTRAP", "127.0.0.1:9092")
    topic = os.environ.get("TOPIC") or fail("TOPIC must be set")
    mode = os.environ.get("MODE", "full")
    records = int(os.environ.get("RECORDS", "20000"))
    if mode not in ("full", "produce", "verify", "group", "resubscribe"):
        fail(f"MODE must be full, produce, verify, group or resubscribe, not {mode!r}")
    if records < 1:
        fail("RECORDS must be >= 1")
    logging.basicConfig(
        level=logging.DEBUG if os.environ.get("COMPAT_DEBUG") else logging.WARNING,
        format=f"[{CLIENT}] %(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    def watchdog():
        print(f"[{CLIENT}] FAIL: watchdog: run exceeded {WATCHDOG_SECS}s", file=sys.stderr, flush=True)
        os._exit(2)

    timer = threading.Timer(WATCHDOG_SECS, watchdog)
    timer.daemon = True
    timer.start()

    check_codecs()
    log(f"kafka-python {kafka.__version__}")
    log(f"bootstrap={bootstrap} topic={topic} mode={mode} records={records}")
    t0 = time.time()
    # The scenarios beyond full/produce/verify live in <mode>_mode.py: (module, records produced).
    scenarios = {
        "group": ("group_mode", records),
        "resubscribe": ("resubscribe_mode", records * 4),
    }
    if mode in scenarios:
        import importlib
        module, produced = scenarios[mode]
        try:
            consumed = importlib.import_module(module).Scenario(bootstrap, topic, records, log).run()
        except Exception as e:
            fail(f"{mode} scenario: {e!r}")
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
