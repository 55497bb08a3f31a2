"""MODE=regex for confluent-kafka (tests/compat/README.md, "Regex scenario"): the internal topic
as librdkafka sees it. Metadata lists `__consumer_offsets` (50 partitions, each with a leader) and
describe_topics reports it internal; a group consumer subscribed to `^(__.*|TOPIC-.*)$` consumes
every record of the two regular topics.

librdkafka (2.16) does not skip internal topics in a regex subscription: it filters only
`topic.blacklist` (rd_kafka_metadata_topic_match), so against Kafka too it is assigned all of
`__consumer_offsets`. The broker must then serve those partitions like Kafka does (leaders,
offsets, fetches without errors); whatever records they hold are not counted."""
import re
import time

from confluent_kafka import Consumer, Producer, TopicCollection
from confluent_kafka.admin import AdminClient, NewTopic

INTERNAL = "__consumer_offsets"
PARTITIONS = 2
CONSUME_TIMEOUT = 90


class Scenario:
    def __init__(self, bootstrap, topic, records, log):
        self.bootstrap = bootstrap
        self.topic = topic
        self.records = records
        self.log = log
        self.topics = [f"{topic}-a", f"{topic}-b"]

    def admin(self):
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        md = admin.list_topics(timeout=30)
        t = md.topics.get(INTERNAL)
        if t is None or t.error is not None:
            raise RuntimeError(f"list_topics: {INTERNAL} missing or in error: {t and t.error}; topics {sorted(md.topics)}")
        if len(t.partitions) != 50 or any(p.leader < 0 for p in t.partitions.values()):
            raise RuntimeError(f"{INTERNAL}: {len(t.partitions)} partitions, leaders {[p.leader for p in t.partitions.values()]}")
        desc = admin.describe_topics(TopicCollection([INTERNAL]))[INTERNAL].result(timeout=30)
        if not desc.is_internal or len(desc.partitions) != 50:
            raise RuntimeError(f"describe_topics: internal={desc.is_internal} partitions={len(desc.partitions)}")
        self.log(f"admin: {INTERNAL} listed with 50 partitions and described as internal")
        new = [NewTopic(t, num_partitions=PARTITIONS, replication_factor=1, config={"retention.ms": "-1"}) for t in self.topics]
        for name, f in admin.create_topics(new, operation_timeout=30, request_timeout=30).items():
            f.result(timeout=60)

    def produce(self):
        p = Producer({"bootstrap.servers": self.bootstrap, "acks": "all", "linger.ms": 5})
        failures = []
        for i in range(self.records):
            p.produce(self.topics[i % 2], value=str(i).encode(), partition=(i // 2) % PARTITIONS,
                      on_delivery=lambda err, msg: err and failures.append(err))
            p.poll(0)
        if p.flush(60) or failures:
            raise RuntimeError(f"produce: {failures[:1]}")

    def consume(self):
        pattern = f"^(__.*|{re.escape(self.topic)}-.*)$"
        c = Consumer({
            "bootstrap.servers": self.bootstrap,
            "group.id": f"{self.topic}-group",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "topic.metadata.refresh.interval.ms": 1000,
        })
        assigned = set()

        def on_assign(consumer, parts):
            assigned.update((p.topic, p.partition) for p in parts)

        c.subscribe([pattern], on_assign=on_assign)
        seen = set()
        internal_records = 0
        deadline = time.time() + CONSUME_TIMEOUT
        while len(seen) < self.records:
            if time.time() > deadline:
                raise RuntimeError(f"consumed {len(seen)} of {self.records} records; assigned {sorted(assigned)}")
            for m in c.consume(num_messages=200, timeout=0.2):
                if m.error():
                    raise RuntimeError(f"consume error: {m.error()}")
                if m.topic() == INTERNAL:
                    internal_records += 1
                    continue
                i = int(m.value())
                if m.topic() != self.topics[i % 2] or i in seen:
                    raise RuntimeError(f"record {i} from {m.topic()} (seen before: {i in seen})")
                seen.add(i)
        want = {(t, p) for t in self.topics for p in range(PARTITIONS)}
        internal = {p for t, p in assigned if t == INTERNAL}
        if not want <= assigned or (internal and internal != set(range(50))):
            raise RuntimeError(f"assignment {sorted(assigned)}: want {sorted(want)} and all or none of {INTERNAL}")
        self.log(f"regex {pattern}: assigned {sorted(want)} and {len(internal)} {INTERNAL} partitions "
                 f"({internal_records} records from it)")
        c.close()
        return len(seen)

    def run(self):
        self.admin()
        self.produce()
        return self.consume()
