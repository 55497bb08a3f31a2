# Low-CPU client check: librdkafka (OpenSSL) produce N x 1 KiB then consume them, PLAINTEXT vs SASL_SSL.
import os, sys, time, resource
from confluent_kafka import Producer, Consumer
from confluent_kafka.admin import AdminClient, NewTopic
addr, proto, topic, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
conf = {"bootstrap.servers": addr, "security.protocol": proto}
if proto == "SASL_SSL":
    conf.update({"sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "bench", "sasl.password": "bench-secret", "ssl.ca.location": "ca.pem"})
admin = AdminClient(conf); admin.create_topics([NewTopic(topic, 3, 1)])[topic].result()
p = Producer({**conf, "linger.ms": 5, "batch.size": 262144, "acks": "all"})
v = os.urandom(1024)
def cpu(): r = resource.getrusage(resource.RUSAGE_SELF); return r.ru_utime + r.ru_stime
t0, c0 = time.time(), cpu()
for i in range(n):
    while True:
        try: p.produce(topic, v); break
        except BufferError: p.poll(0.01)
p.flush(60)
t1, c1 = time.time(), cpu()
c = Consumer({**conf, "group.id": topic, "auto.offset.reset": "earliest", "enable.auto.commit": False})
c.subscribe([topic]); got = 0; first = None
deadline = time.time() + 120
while got < n and time.time() < deadline:
    for m in c.consume(10000, 1.0):
        if m.error(): continue
        if first is None: first, cf = time.time(), cpu()
        got += 1
t2, c2 = time.time(), cpu()
mb = n * 1024 / 1e6
print(f"{proto}: produce {mb/(t1-t0):.1f} MB/s (client {1000*(c1-c0)/mb:.1f} ms/MB); fetch {mb/(t2-first):.1f} MB/s after first record (client {1000*(c2-cf)/mb:.1f} ms/MB); got {got}")
