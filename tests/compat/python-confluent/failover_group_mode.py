"""MODE=failover-group for confluent-kafka (tests/compat/README.md, "Group failover scenario"):
one group member of GROUP (default TOPIC-fg) at librdkafka's default settings (classic
protocol, range,roundrobin assignors, session 45 s, heartbeat 3 s, auto commit every 5 s)
except auto.offset.reset=earliest, subscribed to TOPIC, consuming until its standard input
closes (the test harness kills brokers meanwhile). Prints one `rec <partition> <offset>
<consumed_us>` line per record and `event <us> <what>` for assignment changes and errors, then
closes the consumer (final commit, leave)."""
import os
import sys
import threading
import time

from confluent_kafka import Consumer


def now_us():
    return time.time_ns() // 1000


def event(what):
    print(f"event {now_us()} {what}", flush=True)


class Scenario:
    def __init__(self, bootstrap, topic, conf_extra, log):
        self.bootstrap = bootstrap
        self.topic = topic
        self.conf_extra = conf_extra
        self.log = log

    def run(self):
        conf = {"bootstrap.servers": self.bootstrap, "client.id": "compat-python-confluent-failover-group",
                "group.id": os.environ.get("GROUP") or f"{self.topic}-fg",
                # Everything the test produced is checked for, including what came before the join.
                "auto.offset.reset": "earliest",
                "error_cb": lambda err: event(f"error {err}")}
        conf.update(self.conf_extra)
        consumer = Consumer(conf)
        closed = threading.Event()

        def watch_stdin():
            sys.stdin.read()
            closed.set()

        threading.Thread(target=watch_stdin, daemon=True).start()

        def parts(ps):
            return [p.partition for p in ps]

        consumer.subscribe([self.topic],
                           on_assign=lambda c, ps: event(f"assigned {parts(ps)}"),
                           on_revoke=lambda c, ps: event(f"revoked {parts(ps)}"),
                           on_lost=lambda c, ps: event(f"lost {parts(ps)}"))
        consumed = 0
        while not closed.is_set():
            msgs = consumer.consume(num_messages=500, timeout=0.1)
            if not msgs:
                continue
            at = now_us()
            lines = []
            for m in msgs:
                if m.error() is not None:
                    event(f"fetch error {m.error()}")
                    continue
                lines.append(f"rec {m.partition()} {m.offset()} {at}\n")
                consumed += 1
            if lines:
                sys.stdout.write("".join(lines))
                sys.stdout.flush()
        consumer.close()
        return consumed
