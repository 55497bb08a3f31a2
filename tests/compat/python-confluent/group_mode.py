"""MODE=group for confluent-kafka (tests/compat/README.md, "Group scenario"): three group members
(threads) on a 12-partition topic consume RECORDS records exactly once in aggregate with
synchronous commits, while a fourth member joins after the first third and the first member
leaves after the second."""
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

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
        c = Consumer({
            "bootstrap.servers": self.s.bootstrap,
            "group.id": self.s.group,
            "client.id": f"compat-python-confluent-member-{self.idx}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        })

        def on_assign(consumer, parts):
            self.assigned = {p.partition for p in parts}

        def on_revoke(consumer, parts):
            # Everything processed is committed before the partitions move.
            try:
                consumer.commit(asynchronous=False)
            except Exception as e:
                if "NO_OFFSET" not in str(e):
                    raise
            self.assigned = set()

        c.subscribe([self.s.topic], on_assign=on_assign, on_revoke=on_revoke)
        while not self.stop:
            msgs = c.consume(num_messages=200, timeout=0.1)
            got = False
            for m in msgs:
                if m.error():
                    raise RuntimeError(f"consume error: {m.error()}")
                i = int(m.value())
                if m.partition() != i % PARTITIONS:
                    raise RuntimeError(f"record {i} read from partition {m.partition()}")
                self.s.record(i)
                got = True
            if got:
                c.commit(asynchronous=False)
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
        errors = []
        for i in range(lo, hi):
            while True:
                try:
                    p.produce(self.topic, key=f"g-{i}".encode(), value=str(i).encode(), partition=i % PARTITIONS,
                              on_delivery=lambda err, msg: err and errors.append(err))
                    break
                except BufferError:
                    p.poll(0.05)
        if p.flush(60) != 0 or errors:
            raise RuntimeError(f"produce failed: {errors[:3]}")
        self.log(f"produced records {lo}..{hi}")

    def run(self):
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        admin.create_topics([NewTopic(self.topic, PARTITIONS, 1)])[self.topic].result(60)
        self.log(f"created topic {self.topic} with {PARTITIONS} partitions")
        producer = Producer({"bootstrap.servers": self.bootstrap, "acks": "all", "linger.ms": 5})
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
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group, "enable.auto.commit": False})
        committed = c.committed([TopicPartition(self.topic, p) for p in range(PARTITIONS)], timeout=60)
        c.close()
        for tp in committed:
            want = (self.records - tp.partition + PARTITIONS - 1) // PARTITIONS
            if tp.error or tp.offset != want:
                raise RuntimeError(f"partition {tp.partition} committed {tp.offset} ({tp.error}), want {want}")
        self.log(f"committed offsets cover {sum(tp.offset for tp in committed)} records")
        return self.count()
