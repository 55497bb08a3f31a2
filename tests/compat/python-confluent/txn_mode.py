"""MODE=txn and MODE=txn-rpw for confluent-kafka / librdkafka (tests/compat/README.md,
"Transactions").

txn: two transactional producers write RECORDS overlapping transactions of 6 records over 3
partitions; every third is aborted after its records were written (flushed). A third producer
leaves a transaction open: AdminClient.list_offsets(latest, READ_COMMITTED) must stop at its
first record. A read_committed consumer must see exactly the committed records, each once, in
offset order per partition; a read_uncommitted one the aborted records too.

txn-rpw: RECORDS records in TOPIC-in; two workers (read_committed group consumer + transactional
producer each, group TOPIC-rpw) copy them to TOPIC-out and commit the consumed offsets with
send_offsets_to_transaction; every fourth transaction is aborted and its input re-processed
(seek back). read_committed output: one copy per input, in input order; the group's committed
offsets at the input's end."""
import threading
import time

from confluent_kafka import Consumer, IsolationLevel, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

PARTITIONS = 3
PER_TXN = 6
READ_TIMEOUT = 60


def create_topics(bootstrap, names):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for name, f in admin.create_topics([NewTopic(n, num_partitions=PARTITIONS, replication_factor=1) for n in names]).items():
        f.result(timeout=60)


def transactional(bootstrap, txn_id):
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id, "transaction.timeout.ms": 60000,
                  "linger.ms": 0})
    p.init_transactions(60)
    return p


def key_of(t, j):
    return f"t{t}-{j}"


def value_of(t, j):
    return f"txn {t} record {j}"


def read_all(bootstrap, topic, isolation, want):
    """Reads topic from offset 0 until each partition holds as many records as `want` has for it,
    then polls 1 s more so that any extra record shows. Returns {partition: [msg]}."""
    need = {p: 0 for p in range(PARTITIONS)}
    for w in want:
        need[w[0]] += 1
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-reader", "enable.auto.commit": False,
                  "isolation.level": isolation, "enable.partition.eof": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    got = {p: [] for p in range(PARTITIONS)}
    deadline = time.time() + READ_TIMEOUT
    grace = None
    try:
        while True:
            if grace is None and all(len(got[p]) >= need[p] for p in got):
                grace = time.time() + 1
            if grace is not None and time.time() > grace:
                return got
            if time.time() > deadline:
                raise RuntimeError(f"{isolation} read of {topic}: {[len(got[p]) for p in got]} of {need} after {READ_TIMEOUT}s")
            for m in c.consume(100, 0.2):
                if m.error():
                    raise RuntimeError(f"{isolation} read of {topic}: {m.error()}")
                got[m.partition()].append(m)
    finally:
        c.close()


def expect_exactly(what, got, want):
    """want: [(partition, offset, key, value, committed)]"""
    for p in range(PARTITIONS):
        ws = sorted((w for w in want if w[0] == p), key=lambda w: w[1])
        gs = got[p]
        for i, (m, w) in enumerate(zip(gs, ws)):
            if m.offset() != w[1] or m.key().decode() != w[2] or m.value().decode() != w[3]:
                raise RuntimeError(f"{what}: partition {p} record #{i} is offset {m.offset()} key {m.key()}, "
                                   f"want offset {w[1]} key {w[2]} (committed={w[4]})")
        if len(gs) != len(ws):
            raise RuntimeError(f"{what}: partition {p} has {len(gs)} records, want {len(ws)}")


class Scenario:
    def __init__(self, bootstrap, topic, records, log):
        self.bootstrap = bootstrap
        self.topic = topic
        self.txns = records
        self.log = log

    def send(self, prod, t, lo, hi, out):
        """Produces records lo..hi of transaction t and waits for their offsets."""
        acks = []

        def cb(err, msg):
            if err is not None:
                raise RuntimeError(f"transactional produce (txn {t}): {err}")
            acks.append(msg)

        for j in range(lo, hi):
            prod.produce(self.topic, key=key_of(t, j), value=value_of(t, j), partition=j % PARTITIONS, on_delivery=cb)
        if prod.flush(60) != 0 or len(acks) != hi - lo:
            raise RuntimeError(f"txn {t}: {len(acks)} of {hi - lo} records acknowledged")
        out.extend((m.partition(), m.offset(), m.key().decode(), m.value().decode()) for m in acks)

    def run(self):
        create_topics(self.bootstrap, [self.topic])
        prods = [transactional(self.bootstrap, f"{self.topic}-tx-0"), transactional(self.bootstrap, f"{self.topic}-tx-1")]
        written = []
        pending = [[], []]
        # Transactions t and t+1 overlap: t writes its first half, t+1 begins and writes its
        # first half, t writes its second half and ends.
        for t in range(self.txns + 1):
            if t < self.txns:
                prods[t % 2].begin_transaction()
                pending[t % 2] = []
                self.send(prods[t % 2], t, 0, PER_TXN // 2, pending[t % 2])
            if t > 0:
                prev = t - 1
                prod = prods[prev % 2]
                self.send(prod, prev, PER_TXN // 2, PER_TXN, pending[prev % 2])
                commit = prev % 3 != 1
                written.extend(w + (commit,) for w in pending[prev % 2])
                if commit:
                    prod.commit_transaction(60)
                else:
                    prod.abort_transaction(60)
        committed = [w for w in written if w[4]]
        self.log(f"{self.txns} transactions: {len(committed)} records committed, {len(written) - len(committed)} aborted")

        open_prod = transactional(self.bootstrap, f"{self.topic}-tx-open")
        open_prod.begin_transaction()
        opened = []
        self.send(open_prod, self.txns, 0, PER_TXN, opened)
        self.check_lso(opened)
        expect_exactly("read_committed with a transaction open",
                       read_all(self.bootstrap, self.topic, "read_committed", committed), committed)
        open_prod.abort_transaction(60)
        written.extend(w + (False,) for w in opened)
        expect_exactly("read_committed", read_all(self.bootstrap, self.topic, "read_committed", committed), committed)
        expect_exactly("read_uncommitted", read_all(self.bootstrap, self.topic, "read_uncommitted", written), written)
        self.log(f"read_committed saw {len(committed)} records; read_uncommitted {len(written)}")
        return len(committed)

    def check_lso(self, opened):
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        tps = [TopicPartition(self.topic, p) for p in range(PARTITIONS)]

        def listed(isolation):
            fs = admin.list_offsets({tp: OffsetSpec.latest() for tp in tps}, isolation_level=isolation)
            return {tp.partition: f.result(timeout=30).offset for tp, f in fs.items()}

        lso = listed(IsolationLevel.READ_COMMITTED)
        hw = listed(IsolationLevel.READ_UNCOMMITTED)
        for p in range(PARTITIONS):
            first = min(w[1] for w in opened if w[0] == p)
            if lso[p] != first:
                raise RuntimeError(f"read_committed end offset of {self.topic}/{p} is {lso[p]} with a transaction "
                                   f"open from {first} (want exactly {first})")
            if hw[p] <= first:
                raise RuntimeError(f"read_uncommitted end offset of {self.topic}/{p} is {hw[p]}, want > {first}")
        self.log(f"LSO {lso} stops at the open transaction; high watermarks {hw}")


class RpwScenario:
    def __init__(self, bootstrap, topic, records, log):
        self.bootstrap = bootstrap
        self.topic = topic
        self.records = records
        self.log = log
        self.input, self.output, self.group = f"{topic}-in", f"{topic}-out", f"{topic}-rpw"
        self.stop = threading.Event()
        self.failure = None
        self.aborted = 0
        self.lock = threading.Lock()

    def run(self):
        create_topics(self.bootstrap, [self.input, self.output])
        prod = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True})
        inputs = []

        def cb(err, msg):
            if err is not None:
                raise RuntimeError(f"produce input: {err}")
            inputs.append((msg.partition(), msg.offset(), msg.key().decode(), msg.value().decode()))

        for i in range(self.records):
            prod.produce(self.input, key=f"in-{i}", value=f"value-{i}", partition=i % PARTITIONS, on_delivery=cb)
        prod.flush(60)
        if len(inputs) != self.records:
            raise RuntimeError(f"{len(inputs)} of {self.records} input records acknowledged")
        end = {}
        for p, o, _, _ in inputs:
            end[p] = max(end.get(p, 0), o + 1)
        self.log(f"produced {self.records} input records; end offsets {end}")

        workers = [threading.Thread(target=self.worker, args=(w,), daemon=True) for w in range(2)]
        for th in workers:
            th.start()
        checker = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group, "enable.auto.commit": False})
        deadline = time.time() + 150
        try:
            while True:
                if self.failure:
                    raise RuntimeError(f"worker: {self.failure}")
                got = checker.committed([TopicPartition(self.input, p) for p in range(PARTITIONS)], timeout=30)
                if all(tp.offset == end[tp.partition] for tp in got):
                    self.log("group offsets committed up to the input's end")
                    break
                if time.time() > deadline:
                    raise RuntimeError(f"group {self.group} committed {[(tp.partition, tp.offset) for tp in got]}, want {end}")
                time.sleep(0.2)
        finally:
            checker.close()
        self.stop.set()
        for th in workers:
            th.join(60)
        if self.failure:
            raise RuntimeError(f"worker: {self.failure}")
        want = [(p, -1, k, f"{p}:{o}:{v}", True) for p, o, k, v in inputs]
        got = read_all(self.bootstrap, self.output, "read_committed", want)
        total = 0
        for p in range(PARTITIONS):
            ws = sorted((w for w in inputs if w[0] == p), key=lambda w: w[1])
            gs = got[p]
            if len(gs) != len(ws):
                raise RuntimeError(f"read_committed {self.output}/{p} has {len(gs)} records for {len(ws)} inputs")
            for i, (m, w) in enumerate(zip(gs, ws)):
                if m.value().decode() != f"{w[0]}:{w[1]}:{w[3]}":
                    raise RuntimeError(f"{self.output}/{p} output #{i} is {m.value()}, want {w[0]}:{w[1]}:{w[3]}")
            total += len(gs)
        extra = 0
        if self.aborted:
            allrecs = read_all(self.bootstrap, self.output, "read_uncommitted", want)
            extra = sum(len(v) for v in allrecs.values()) - total
            if extra <= 0:
                raise RuntimeError(f"read_uncommitted shows no aborted copies although {self.aborted} transactions aborted")
        self.log(f"read_committed output: {total} records, one per input; read_uncommitted: {extra} more "
                 f"({self.aborted} aborted transactions)")
        return total

    def worker(self, w):
        try:
            c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group, "enable.auto.commit": False,
                          "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
            prod = transactional(self.bootstrap, f"{self.topic}-rpw-{w}")
            c.subscribe([self.input])
            txn = 0
            while not self.stop.is_set():
                msgs = c.consume(7, 0.2)
                if not msgs:
                    continue
                prod.begin_transaction()
                first, nxt = {}, {}
                for m in msgs:
                    if m.error():
                        raise RuntimeError(f"consume: {m.error()}")
                    first.setdefault(m.partition(), m.offset())
                    nxt[m.partition()] = m.offset() + 1
                    prod.produce(self.output, key=m.key(), value=f"{m.partition()}:{m.offset()}:{m.value().decode()}",
                                 partition=m.partition())
                offsets = [TopicPartition(self.input, p, o) for p, o in sorted(nxt.items())]
                prod.send_offsets_to_transaction(offsets, c.consumer_group_metadata(), 60)
                abort = txn % 4 == 3
                txn += 1
                if abort:
                    prod.flush(60)
                    prod.abort_transaction(60)
                    with self.lock:
                        self.aborted += 1
                    for p, o in first.items():
                        c.seek(TopicPartition(self.input, p, o))
                else:
                    prod.commit_transaction(60)
            c.close()
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            self.failure = self.failure or repr(e)
