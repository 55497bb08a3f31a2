"""One phase of bench/security.sh with CLIENT=librdkafka: a low-CPU client (librdkafka + OpenSSL,
through confluent-kafka from tests/compat/python-confluent), so the SASL_SSL / PLAINTEXT ratio
measures the broker, not the Java tools' JSSE (which costs them 1.4-1.7x CPU per MB on either
broker, bench/results/2026-12-07-security-tls/).

    security_librdkafka.py ADDR PLAINTEXT|SASL_SSL TOPIC RECORDS RECORD_BYTES produce|consume

Prints one line: "<MB/s> <client CPU ms per MB>". produce creates TOPIC (3 partitions) and sends
RECORDS records (acks=all, linger 5 ms, 256 KiB batches, as the Java runs); consume reads them
back from the start, MB/s counted from the first record received. SASL_SSL uses the bench's
SCRAM-SHA-512 user and ./ca.pem.
"""
import os
import resource
import sys
import time

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

addr, proto, topic, n, size, phase = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
conf = {"bootstrap.servers": addr, "security.protocol": proto}
if proto == "SASL_SSL":
    conf.update({"sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "bench",
                 "sasl.password": "bench-secret", "ssl.ca.location": "ca.pem"})
mb = n * size / 1e6


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


if phase == "produce":
    admin = AdminClient(conf)  # kept referenced until the result: a dropped handle fails it
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result()
    p = Producer({**conf, "linger.ms": 5, "batch.size": 262144, "acks": "all"})
    value = os.urandom(size)
    t0, c0 = time.time(), cpu()
    for _ in range(n):
        while True:
            try:
                p.produce(topic, value)
                break
            except BufferError:
                p.poll(0.01)
    if p.flush(120) != 0:
        sys.exit("records left unacknowledged")
    t1, c1 = time.time(), cpu()
else:
    c = Consumer({**conf, "group.id": topic, "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    got, t0, c0 = 0, None, None
    deadline = time.time() + 120
    while got < n and time.time() < deadline:
        for m in c.consume(10000, 1.0):
            if m.error():
                continue
            if t0 is None:
                t0, c0 = time.time(), cpu()
            got += 1
    t1, c1 = time.time(), cpu()
    c.close()
    if got < n:
        sys.exit(f"consumed {got} of {n}")
print(f"{mb / (t1 - t0):.1f} {1000 * (c1 - c0) / mb:.1f}")
