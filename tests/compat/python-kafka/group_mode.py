"""MODE=group for kafka-python (tests/compat/README.md, "Group scenario"): three group members
(threads, one KafkaConsumer each) on a 12-partition topic consume RECORDS records exactly once in
aggregate with synchronous commits, while a fourth member joins after the first third and the
first member leaves after the second."""
import threading
import time

from kafka import ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

PARTITIONS = 12


class Member(threading.Thread):
    def __init__(self, idx, scenario):
        super().__init__(name=f"member-{idx}", daemon=True)
        self.idx = idx
        self.s = scenario
        self.stop = False
        self.assigned = set()
        self.error = None

    def run(self):
        try:
            self._run()
        except Exception as e:  # reported by the main thread
            self.error = e

    def _run(self):
        c = KafkaConsumer(
            bootstrap_servers=self.s.bootstrap,
            group_id=self.s.group,
            client_id=f"compat-python-kafka-member-{self.idx}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        member = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                # Everything processed is committed before the partitions move.
                if member.assigned:
                    c.commit()
                member.assigned = set()

            def on_partitions_assigned(self, assigned):
                member.assigned = {tp.partition for tp in assigned}

        c.subscribe([self.s.topic], listener=Listener())
        while not self.stop:
            batches = c.poll(timeout_ms=100, max_records=200)
            got = False
            for tp, msgs in batches.items():
                for m in msgs:
                    i = int(m.value)
                    if m.partition != i % PARTITIONS:
                        raise RuntimeError(f"record {i} read from partition {m.partition}")
                    self.s.record(i)
                    got = True
            if got:
                c.commit()
        c.close()


class Scenario:
    def __init__(self, bootstrap, topic, records, log):
        self.bootstrap, self.topic, self.records, self.log = bootstrap, topic, records, log
        self.group = topic + "-group"
        self.lock = threading.Lock()
        self.seen = set()
        self.duplicates = 0

    def record(self, i):
        with self.lock:
            if i in self.seen:
                self.duplicates += 1
            else:
                self.seen.add(i)

    def count(self):
        with self.lock:
            return len(self.seen)

    def wait(self, what, cond, members, timeout=60):
        deadline = time.time() + timeout
        while not cond():
            for m in members:
                if m.error:
                    raise RuntimeError(f"member {m.idx} failed: {m.error}")
            if time.time() > deadline:
                raise RuntimeError(f"timed out waiting for {what} (seen {self.count()})")
            time.sleep(0.02)

    @staticmethod
    def covers_all(members):
        return all(m.assigned for m in members) and sum(len(m.assigned) for m in members) == PARTITIONS

    def produce(self, p, lo, hi):
        futures = [p.send(self.topic, key=f"g-{i}".encode(), value=str(i).encode(), partition=i % PARTITIONS)
                   for i in range(lo, hi)]
        p.flush(60)
        for f in futures:
            f.get(60)
        self.log(f"produced records {lo}..{hi}")

    def run(self):
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        admin.create_topics([NewTopic(self.topic, PARTITIONS, 1)])
        self.log(f"created topic {self.topic} with {PARTITIONS} partitions")
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5)
        third = self.records // 3
        members = [Member(i, self) for i in range(3)]
        t0 = time.time()
        for m in members:
            m.start()
        try:
            self.wait("3 members to share the partitions", lambda: self.covers_all(members), members)
            self.log(f"3 members joined in {(time.time() - t0) * 1000:.0f} ms")
            self.produce(producer, 0, third)
            self.wait("first third", lambda: self.count() >= third, members)
            fourth = Member(3, self)
            members.append(fourth)
            t1 = time.time()
            fourth.start()
            self.produce(producer, third, 2 * third)
            self.wait("4 members to share the partitions", lambda: self.covers_all(members), members)
            self.log(f"rebalance 3->4 members took {(time.time() - t1) * 1000:.0f} ms")
            self.wait("second third", lambda: self.count() >= 2 * third, members)
            first = members.pop(0)
            t2 = time.time()
            first.stop = True
            first.join(60)
            self.produce(producer, 2 * third, self.records)
            self.wait("3 members to share the partitions again", lambda: self.covers_all(members), members)
            self.log(f"rebalance 4->3 members took {(time.time() - t2) * 1000:.0f} ms")
            self.wait("all records", lambda: self.count() >= self.records, members, timeout=120)
            time.sleep(1)  # any duplicate would arrive now
        finally:
            for m in members:
                m.stop = True
            for m in members:
                m.join(60)
        for m in members:
            if m.error:
                raise RuntimeError(f"member {m.idx} failed: {m.error}")
        if self.duplicates or self.count() != self.records:
            raise RuntimeError(f"consumed {self.count()} distinct records with {self.duplicates} duplicates, "
                               f"want {self.records} exactly once")
        # Committed offsets (OffsetFetch) must be each partition's end.
        committed = admin.list_consumer_group_offsets(self.group)
        total = 0
        for p in range(PARTITIONS):
            o = committed.get(TopicPartition(self.topic, p))
            want = (self.records - p + PARTITIONS - 1) // PARTITIONS
            if o is None or o.offset != want:
                raise RuntimeError(f"partition {p} committed {o}, want {want}")
            total += o.offset
        self.log(f"committed offsets cover {total} records; groups listed: {admin.list_consumer_groups()}")
        admin.close()
        return self.count()
