"""MODE=resubscribe for confluent-kafka (tests/compat/README.md, "Resubscribe scenario"): one
classic group consumer changes its subscription, sees a subscribed topic grow and sees one
deleted and re-created; each rebalance must finish within PHASE_LIMIT seconds (a coordinator
that waits for the rebalance timeout instead of the last rejoin takes minutes).
ASSIGNOR picks partition.assignment.strategy (default: librdkafka's "range,roundrobin";
"cooperative-sticky" adds the incremental protocol's follow-up join)."""
import os
import threading
import time

from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

PARTITIONS = 3
GROWN = 6
PHASE_LIMIT = 10.0
WAIT = 30.0
# Partition errors a deleted topic gives until the consumer's next rebalance drops it.
TOLERATED = {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._PARTITION_EOF, getattr(KafkaError, "UNKNOWN_TOPIC_ID", -1)}


class Scenario:
    def __init__(self, bootstrap, topic, records, log):
        self.bootstrap, self.records, self.log = bootstrap, records, log
        self.a, self.b = f"{topic}-a", f"{topic}-b"
        self.group = f"{topic}-resub"
        self.assignor = os.environ.get("ASSIGNOR", "")
        self.lock = threading.Lock()
        self.seen = set()
        self.assigned = set()
        self.subscription = None  # (topics, time) for the consumer thread to apply
        self.stop = False
        self.error = None
        self.admin = AdminClient({"bootstrap.servers": bootstrap})

    # ---- the consumer thread (all Consumer calls happen here) ----

    def consume(self):
        try:
            conf = {
                "bootstrap.servers": self.bootstrap,
                "group.id": self.group,
                "client.id": "compat-python-confluent-resubscribe",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                # New partitions and deleted / re-created topics are noticed on a metadata
                # refresh: every second instead of librdkafka's 5 minutes.
                "topic.metadata.refresh.interval.ms": 1000,
            }
            if self.assignor:
                conf["partition.assignment.strategy"] = self.assignor
            c = Consumer(conf)
            incremental = self.assignor == "cooperative-sticky"

            def on_assign(consumer, parts):
                with self.lock:
                    if incremental:
                        self.assigned |= {(p.topic, p.partition) for p in parts}
                    else:
                        self.assigned = {(p.topic, p.partition) for p in parts}

            def on_revoke(consumer, parts):
                with self.lock:
                    if incremental:
                        self.assigned -= {(p.topic, p.partition) for p in parts}
                    else:
                        self.assigned = set()

            applied = None
            while not self.stop:
                with self.lock:
                    wanted = self.subscription
                if wanted is not applied:
                    c.subscribe(list(wanted), on_assign=on_assign, on_revoke=on_revoke, on_lost=on_revoke)
                    applied = wanted
                for m in c.consume(num_messages=100, timeout=0.1):
                    if m.error():
                        # A deleted topic's partitions report errors until the next rebalance.
                        if m.error().code() in TOLERATED:
                            continue
                        raise RuntimeError(f"consume error: {m.error()}")
                    with self.lock:
                        self.seen.add(m.value().decode())
            c.close()
        except Exception as e:  # reported by the main thread
            self.error = e

    # ---- the main thread ----

    def wait(self, what, cond, timeout=WAIT):
        deadline = time.time() + timeout
        while True:
            with self.lock:
                if cond():
                    return
            if self.error:
                raise RuntimeError(f"consumer failed: {self.error}")
            if time.time() > deadline:
                raise RuntimeError(f"{what}: not done after {timeout:.0f} s")
            time.sleep(0.02)

    def produce(self, topic, prefix, partitions):
        # A new producer each time, so its first metadata already knows new partitions / topics.
        p = Producer({"bootstrap.servers": self.bootstrap, "acks": "all", "linger.ms": 5})
        errors = []
        values = [f"{prefix}-{i}" for i in range(self.records)]
        for i, v in enumerate(values):
            p.produce(topic, value=v.encode(), partition=partitions[i % len(partitions)],
                      on_delivery=lambda err, msg: err and errors.append(err))
        if p.flush(30) != 0 or errors:
            raise RuntimeError(f"produce to {topic} failed: {errors[:3]}")
        return set(values)

    def create(self, topic):
        self.admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)

    def phase(self, name, start, values):
        self.wait(f"{name}: records", lambda: values <= self.seen)
        took = time.time() - start
        self.log(f"{name} took {took * 1000:.0f} ms")
        return took

    def run(self):
        self.create(self.a)
        self.create(self.b)
        self.log(f"created {self.a} and {self.b} with {PARTITIONS} partitions; assignor "
                 f"{self.assignor or 'default'}")
        t = time.time()
        self.subscription = (self.a,)
        consumer = threading.Thread(target=self.consume, name="consumer", daemon=True)
        consumer.start()
        took = {}
        try:
            self.phase("first join", t, self.produce(self.a, "a", [0, 1, 2]))

            # (a) The running consumer subscribes to one more topic: it rejoins on its own.
            t = time.time()
            with self.lock:
                self.subscription = (self.a, self.b)
            took["subscription change"] = self.phase("subscription change", t,
                                                     self.produce(self.b, "b", [0, 1, 2]))

            # (b) The subscribed topic grows; the consumer notices on its metadata refresh.
            t = time.time()
            self.admin.create_partitions([NewPartitions(self.a, GROWN)])[self.a].result(30)
            took["partition growth"] = self.phase("partition growth", t,
                                                  self.produce(self.a, "p", list(range(PARTITIONS, GROWN))))

            # (c) A subscribed topic is deleted (the consumer drops its partitions), then
            # created again (the consumer picks the new topic up).
            t = time.time()
            self.admin.delete_topics([self.b])[self.b].result(30)
            # Done once the consumer holds partitions again, none of the deleted topic.
            self.wait("topic deletion", lambda: self.assigned and not any(tp[0] == self.b for tp in self.assigned))
            took["topic deletion"] = time.time() - t
            self.log(f"topic deletion took {took['topic deletion'] * 1000:.0f} ms")
            t = time.time()
            self.create(self.b)
            took["topic re-creation"] = self.phase("topic re-creation", t, self.produce(self.b, "r", [0, 1, 2]))
        finally:
            self.stop = True
            consumer.join(30)
        if self.error:
            raise RuntimeError(f"consumer failed: {self.error}")
        slow = {k: v for k, v in took.items() if v > PHASE_LIMIT}
        if slow:
            raise RuntimeError(f"rebalances slower than {PHASE_LIMIT:.0f} s: {slow}")
        return len(self.seen)
