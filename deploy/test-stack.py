"""Client side of deploy/test-stack.sh: drives the compose cluster through 127.0.0.1:19092-19094
with kafka-python (the README's quick-start client).

  python3 deploy/test-stack.py failover STATE   # idempotent produce; docker kill the leader
  python3 deploy/test-stack.py verify STATE     # every acknowledged record is there, once
                                                # (run with the broker dead, and after a restart)
  python3 deploy/test-stack.py sasl-ssl CA_PEM  # docker-compose.sasl-ssl.yml: produce and consume
                                                # over SASL_SSL (SCRAM-SHA-512, user admin,
                                                # password SKIFF_ADMIN_PASSWORD) at 127.0.0.1:19192

`failover` writes the acknowledged records to STATE (JSON) and prints `failover_ms=N`, the time
from the kill to the first acknowledgement of a record sent after it. `verify` reads them all
back. Every wait is bounded; any failure exits non-zero with the reason.
"""

import json
import subprocess
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

# All three brokers: the one behind 19092 may be the one killed.
BROKERS = {101: "127.0.0.1:19092", 102: "127.0.0.1:19093", 103: "127.0.0.1:19094"}
BOOTSTRAP = list(BROKERS.values())
TOPIC = "failover"
PARTITIONS = 3
BEFORE_KILL = 300  # records acknowledged before the kill
AFTER_KILL = 300  # records that must be acknowledged after it
DEADLINE_S = 120  # the whole produce phase
PROJECT = "skiff"  # deploy/docker-compose.yml `name:`


def fail(msg):
    print(f"test-stack: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def leader_of(admin, topic, partition):
    for t in admin.describe_topics([topic]):
        for p in t["partitions"]:
            if p["partition"] == partition:
                return p["leader"]
    return None


def failover(state_path):
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=10000)
    try:
        admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
    except TopicAlreadyExistsError:
        pass
    # The partition whose leader is killed: one led by broker-1 when there is one, since its
    # port is also the clients' first bootstrap address (the harder case); else partition 0.
    leaders = {}
    deadline = time.monotonic() + 30
    while len(leaders) < PARTITIONS:
        if time.monotonic() > deadline:
            fail(f"{TOPIC} has leaders only for {leaders} after 30 s")
        for t in admin.describe_topics([TOPIC]):
            leaders = {p["partition"]: p["leader"] for p in t["partitions"] if p["leader"] in BROKERS}
        time.sleep(0.2)
    partition = min((p for p, n in leaders.items() if n == 101), default=0)
    producer = KafkaProducer(
        bootstrap_servers=BOOTSTRAP,
        acks="all",
        enable_idempotence=True,
        max_in_flight_requests_per_connection=1,  # kafka-python requires 1 with idempotence
        linger_ms=5,
        retry_backoff_ms=50,
        delivery_timeout_ms=60000,
        request_timeout_ms=10000,
    )
    acked = []  # (value, offset), in acknowledgement order
    errors = []
    first_ack_after_kill = [None]
    kill_at = [None, None]  # (index of the first record sent after the kill, monotonic time)

    def on_ack(i, value):
        def cb(md):
            acked.append((value, md.offset))
            if kill_at[0] is not None and i >= kill_at[0] and first_ack_after_kill[0] is None:
                first_ack_after_kill[0] = time.monotonic()

        return cb

    start = time.monotonic()
    i = 0
    killed = None
    while True:
        if time.monotonic() - start > DEADLINE_S:
            fail(f"produce phase over {DEADLINE_S} s: {len(acked)} acknowledged, killed={killed}, errors={errors[:3]}")
        if killed is None and len(acked) >= BEFORE_KILL:
            leader = leader_of(admin, TOPIC, partition)
            if leader is None or not 101 <= leader <= 103:
                fail(f"no broker leads {TOPIC}-{partition} (leader {leader})")
            killed = f"{PROJECT}-broker-{leader - 100}-1"
            kill_at[0] = i
            kill_at[1] = time.monotonic()
            out = subprocess.run(["docker", "kill", killed], capture_output=True, text=True, timeout=30)
            if out.returncode != 0:
                fail(f"docker kill {killed}: {out.stderr.strip()}")
            print(f"killed {killed} (node {leader}, leader of {TOPIC}-{partition}) after {len(acked)} acks")
        if killed is not None and first_ack_after_kill[0] is not None and len(acked) >= BEFORE_KILL + AFTER_KILL:
            break
        if errors:
            fail(f"a send failed: {errors[0]!r}")
        value = b"r%06d" % i
        fut = producer.send(TOPIC, value=value, partition=partition)
        fut.add_callback(on_ack(i, value.decode()))
        fut.add_errback(errors.append)
        i += 1
        if i % 50 == 0:
            # Bounds the records in flight, so the kill lands under load but the counts stay small.
            producer.flush(timeout=60)
    producer.flush(timeout=60)
    producer.close(timeout=10)
    if errors:
        fail(f"a send failed: {errors[0]!r}")
    offsets = [o for _, o in acked]
    if offsets != sorted(offsets) or len(set(offsets)) != len(offsets):
        fail("acknowledged offsets are not strictly increasing")
    failover_ms = int((first_ack_after_kill[0] - kill_at[1]) * 1000)
    with open(state_path, "w") as f:
        json.dump({"killed": killed, "partition": partition, "acked": acked, "sent": i}, f)
    print(f"acknowledged {len(acked)} of {i} sent; produce resumed after the kill")
    print(f"failover_ms={failover_ms}")
    admin.close()
    # A new client: the old one may still pick the dead broker for its metadata request.
    alive = [a for n, a in BROKERS.items() if f"{PROJECT}-broker-{n - 100}-1" != killed]
    admin = KafkaAdminClient(bootstrap_servers=alive, request_timeout_ms=10000)
    new_leader = leader_of(admin, TOPIC, partition)
    admin.close()
    if new_leader is None or f"{PROJECT}-broker-{new_leader - 100}-1" == killed:
        fail(f"{TOPIC}-{partition} is still led by the killed broker ({new_leader})")
    print(f"{TOPIC}-{partition} now led by node {new_leader}")


def verify(state_path):
    with open(state_path) as f:
        state = json.load(f)
    acked = state["acked"]
    partition = state["partition"]
    tp = TopicPartition(TOPIC, partition)
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=None, enable_auto_commit=False)
    consumer.assign([tp])
    consumer.seek_to_end(tp)
    end = consumer.position(tp)
    consumer.seek(tp, 0)
    got = {}
    deadline = time.monotonic() + 60
    while consumer.position(tp) < end:
        if time.monotonic() > deadline:
            fail(f"reading {TOPIC}-{partition}: at offset {consumer.position(tp)} of {end} after 60 s")
        for batch in consumer.poll(timeout_ms=1000).values():
            for r in batch:
                got.setdefault(r.value.decode(), []).append(r.offset)
    consumer.close()
    missing = [(v, o) for v, o in acked if got.get(v) != [o]]
    if missing:
        fail(f"{len(missing)} acknowledged records missing or moved, e.g. {missing[:3]} (read {len(got)} values, end {end})")
    dups = {v: o for v, o in got.items() if len(o) > 1}
    if dups:
        fail(f"duplicates under idempotent produce: {list(dups.items())[:3]}")
    print(f"all {len(acked)} acknowledged records read back at their offsets, no duplicates ({end} in {TOPIC}-{partition})")


def sasl_ssl(ca_pem):
    """10 records produced and read back over SASL_SSL; the brokers must advertise their
    SASL_SSL ports (19192-19194), else the clients could not reach the partition leaders."""
    import os

    security = dict(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username="admin",
        sasl_plain_password=os.environ["SKIFF_ADMIN_PASSWORD"],
        ssl_cafile=ca_pem,
    )
    bootstrap = ["127.0.0.1:19192", "127.0.0.1:19193", "127.0.0.1:19194"]
    topic = "sasl-ssl"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000, **security)
    try:
        admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    except TopicAlreadyExistsError:
        pass
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", request_timeout_ms=10000, **security)
    for i in range(10):
        producer.send(topic, key=b"k%d" % i, value=b"secure %d" % i, partition=i % PARTITIONS).get(timeout=30)
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **security)
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    got = set()
    deadline = time.monotonic() + 60
    while len(got) < 10:
        if time.monotonic() > deadline:
            fail(f"read {sorted(got)} of 10 records over SASL_SSL in 60 s")
        for records in consumer.poll(timeout_ms=1000).values():
            got.update(r.value for r in records)
    consumer.close()
    if got != {b"secure %d" % i for i in range(10)}:
        fail(f"unexpected records over SASL_SSL: {sorted(got)}")
    print("10 records produced and consumed over SASL_SSL (SCRAM-SHA-512)")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("failover", "verify", "sasl-ssl"):
        fail(__doc__)
    {"failover": failover, "verify": verify, "sasl-ssl": sasl_ssl}[sys.argv[1]](sys.argv[2])
