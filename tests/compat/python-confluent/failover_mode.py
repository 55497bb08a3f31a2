"""MODE=failover for confluent-kafka (tests/compat/README.md, "Failover scenario"): a producer
at librdkafka's default settings (plus enable.idempotence=true) hands one record every
1000/RATE ms to the client, round-robin over the topic's PARTITIONS partitions, and prints
one line per acknowledgement with the wall-clock times the record was handed over and
acknowledged, until its standard input closes (the test harness kills brokers meanwhile)."""
import sys
import threading
import time

from confluent_kafka import Producer


def now_us():
    return time.time_ns() // 1000


class Scenario:
    def __init__(self, bootstrap, topic, partitions, rate, conf_extra, log):
        self.bootstrap = bootstrap
        self.topic = topic
        self.partitions = partitions
        self.rate = rate
        self.conf_extra = conf_extra
        self.log = log
        self.lock = threading.Lock()
        self.acked = 0
        self.failed = 0

    def run(self):
        conf = {"bootstrap.servers": self.bootstrap, "client.id": "compat-python-confluent-failover",
                "enable.idempotence": True}
        conf.update(self.conf_extra)
        producer = Producer(conf)
        closed = threading.Event()

        def watch_stdin():
            sys.stdin.read()
            closed.set()

        threading.Thread(target=watch_stdin, daemon=True).start()

        def on_delivery(handed, i, p):
            def cb(err, msg):
                acked = now_us()
                with self.lock:
                    if err is not None:
                        self.failed += 1
                        print(f"fail {p} {i} {err}", flush=True)
                    else:
                        self.acked += 1
                        print(f"ack {p} {i} {handed} {acked}", flush=True)
            return cb

        interval = 1.0 / self.rate
        i = 0
        next_at = time.monotonic()
        while not closed.is_set():
            p = i % self.partitions
            handed = now_us()
            producer.produce(self.topic, value=str(i).encode(), partition=p, on_delivery=on_delivery(handed, i, p))
            i += 1
            producer.poll(0)
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                # poll() serves delivery callbacks while waiting for the next record's turn.
                producer.poll(delay)
        remaining = producer.flush(60)
        if remaining or self.failed or self.acked != i:
            raise RuntimeError(f"{i} handed, {self.acked} acked, {self.failed} failed, {remaining} unflushed")
        return i
