#!/usr/bin/env python3
"""Fetch size limits with librdkafka (issue #10, bug 2; run by tests/fetch_limits.rs).

3 partitions with four 900 KiB records each, consumed with `max.partition.fetch.bytes`
20,000,000, `fetch.max.bytes` 1,000,000 and `receive.message.max.bytes` 1,000,512: librdkafka
refuses any response frame larger than the last, so a broker that lets a response exceed
`fetch.max.bytes` by more than the first batch (KIP-74) makes it reconnect forever. Every record
must arrive within 60 s. Environment: BOOTSTRAP, TOPIC. Prints `fetch-limits ok records=12`.
"""
import os
import sys
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

PARTITIONS = 3
PER_PARTITION = 4
SIZE = 900 * 1024
DEADLINE_SECS = 60


def fail(msg):
    print(f"[fetch-limits] FAIL: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def main():
    bootstrap = os.environ.get("BOOTSTRAP") or fail("BOOTSTRAP must be set")
    topic = os.environ.get("TOPIC") or fail("TOPIC must be set")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)]).values():
        f.result(timeout=30)

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0,
                  "message.max.bytes": 1_000_000})
    errors = []
    for i in range(PER_PARTITION):
        for part in range(PARTITIONS):
            value = bytes([(part * 16 + i) % 251]) * SIZE
            p.produce(topic, value=value, key=f"{part}-{i}".encode(), partition=part,
                      on_delivery=lambda err, msg: err and errors.append(err))
            p.flush(30)
    if errors or p.flush(30) != 0:
        fail(f"produce failed: {errors}")

    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"{topic}-reader",
        "enable.auto.commit": False,
        "max.partition.fetch.bytes": 20_000_000,
        "fetch.max.bytes": 1_000_000,
        "receive.message.max.bytes": 1_000_512,
    })
    c.assign([TopicPartition(topic, part, 0) for part in range(PARTITIONS)])
    got = {}
    started = time.time()
    while len(got) < PARTITIONS * PER_PARTITION:
        if time.time() - started > DEADLINE_SECS:
            fail(f"only {len(got)} of {PARTITIONS * PER_PARTITION} records after {DEADLINE_SECS}s: {sorted(got)}")
        m = c.poll(1.0)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                continue
            fail(f"consumer error: {m.error()}")
        part, off = m.partition(), m.offset()
        want = bytes([(part * 16 + off) % 251]) * SIZE
        if m.value() != want or m.key() != f"{part}-{off}".encode():
            fail(f"record {part}@{off}: wrong key or value ({len(m.value() or b'')} bytes)")
        got[(part, off)] = True
    c.close()
    print(f"fetch-limits ok records={len(got)} in {time.time() - started:.2f}s", flush=True)


if __name__ == "__main__":
    main()
