"""MODE=resubscribe for kafka-python (tests/compat/README.md, "Resubscribe scenario"): one
classic group consumer changes its subscription, sees a subscribed topic grow and sees one
deleted and re-created; each rebalance must finish within PHASE_LIMIT seconds (a coordinator
that waits for the rebalance timeout instead of the last rejoin takes minutes)."""
import threading
import time

from kafka import ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewPartitions, NewTopic
from kafka.errors import UnknownTopicOrPartitionError

PARTITIONS = 3
GROWN = 6
PHASE_LIMIT = 10.0
WAIT = 30.0


class Scenario:
    def __init__(self, bootstrap, topic, records, log):
        self.bootstrap, self.records, self.log = bootstrap, records, log
        self.a, self.b = f"{topic}-a", f"{topic}-b"
        self.group = f"{topic}-resub"
        self.lock = threading.Lock()
        self.seen = set()
        self.assigned = set()
        self.subscription = None  # the topics for the consumer thread to apply
        self.stop = False
        self.error = None
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap)

    # ---- the consumer thread (KafkaConsumer is not thread-safe: every call happens here) ----

    def consume(self):
        try:
            c = KafkaConsumer(
                bootstrap_servers=self.bootstrap,
                group_id=self.group,
                client_id="compat-python-kafka-resubscribe",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                # A deleted topic must stay deleted until the scenario re-creates it.
                allow_auto_create_topics=False,
                # New partitions and deleted / re-created topics are noticed on a metadata
                # refresh: every second instead of the default 5 minutes.
                metadata_max_age_ms=1000,
            )
            s = self

            class Listener(ConsumerRebalanceListener):
                def on_partitions_revoked(self, revoked):
                    with s.lock:
                        s.assigned = set()

                def on_partitions_assigned(self, assigned):
                    with s.lock:
                        s.assigned = {(tp.topic, tp.partition) for tp in assigned}

            applied = None
            while not self.stop:
                with self.lock:
                    wanted = self.subscription
                if wanted is not applied:
                    c.subscribe(list(wanted), listener=Listener())
                    applied = wanted
                try:
                    # Not 100 ms: with polls that short kafka-python 2.3.3 was seen (2 runs in 4)
                    # to receive a rebalance's SyncGroup answer (and heartbeat at its
                    # generation) yet never apply the assignment, when the join finished
                    # after the poll had timed out; 1 s polls did not show it in 6 runs.
                    batches = c.poll(timeout_ms=1000, max_records=100)
                except UnknownTopicOrPartitionError:
                    # A deleted topic's partitions report this until the next rebalance.
                    continue
                with self.lock:
                    for records in batches.values():
                        self.seen.update(r.value.decode() for r in records)
            c.close(autocommit=False)
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
                raise RuntimeError(f"consumer failed: {self.error!r}")
            if time.time() > deadline:
                raise RuntimeError(f"{what}: not done after {timeout:.0f} s")
            time.sleep(0.02)

    def produce(self, topic, prefix, partitions):
        # A new producer each time, so its first metadata already knows new partitions / topics.
        p = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5)
        values = [f"{prefix}-{i}" for i in range(self.records)]
        futures = [p.send(topic, value=v.encode(), partition=partitions[i % len(partitions)])
                   for i, v in enumerate(values)]
        for f in futures:
            f.get(timeout=30)
        p.close()
        return set(values)

    def create(self, topic):
        self.admin.create_topics([NewTopic(topic, PARTITIONS, 1)])

    def phase(self, name, start, values):
        self.wait(f"{name}: records", lambda: values <= self.seen)
        took = time.time() - start
        self.log(f"{name} took {took * 1000:.0f} ms")
        return took

    def run(self):
        self.create(self.a)
        self.create(self.b)
        self.log(f"created {self.a} and {self.b} with {PARTITIONS} partitions")
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
            self.admin.create_partitions({self.a: NewPartitions(GROWN)})
            took["partition growth"] = self.phase("partition growth", t,
                                                  self.produce(self.a, "p", list(range(PARTITIONS, GROWN))))

            # (c) A subscribed topic is deleted (the consumer drops its partitions), then
            # created again (the consumer picks the new topic up).
            t = time.time()
            self.admin.delete_topics([self.b])
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
            self.admin.close()
        if self.error:
            raise RuntimeError(f"consumer failed: {self.error!r}")
        slow = {k: v for k, v in took.items() if v > PHASE_LIMIT}
        if slow:
            raise RuntimeError(f"rebalances slower than {PHASE_LIMIT:.0f} s: {slow}")
        return len(self.seen)
