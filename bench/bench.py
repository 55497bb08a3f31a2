"""Measure ONE running broker with Kafka's own tools; bench/run.sh starts and stops the brokers.

  python bench.py --target NAME --bootstrap HOST:PORT --pid PID --out DIR --profile quick|full \
      --libs KAFKA_LIBS --benchtool CLASSDIR [--metrics-url URL] [--minio-metrics-url URL] [--scaling]

Every tool run has a timeout and its raw output is kept in DIR/raw/NAME/. One JSON object per
measurement is appended to DIR/raw/NAME/runs.jsonl; report.py turns those into tables and plots.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import parse

HERE = os.path.dirname(os.path.abspath(__file__))

# Durations are per run (seconds of producing); reps = repetitions of every measurement.
PROFILES = {
    "quick": dict(
        reps=1, seconds=8, sizes=[1024], partitions=[1, 16], producers=[1],
        fixed=[(1024, 1)], consume=[(1024, 16)], e2e_sizes=[1024], e2e_messages=500, e2e_messages_slow=40,
        scale_partitions=[1, 100, 1000], scale_connections=[1, 16, 128], scale_seconds=5,
    ),
    "full": dict(
        reps=3, seconds=4, sizes=[100, 1024, 16384], partitions=[1, 16, 256], producers=[1, 8],
        fixed=[(100, 16), (1024, 16), (16384, 16)], consume=[(100, 16), (1024, 16), (16384, 16)],
        e2e_sizes=[100, 1024, 16384], e2e_messages=500, e2e_messages_slow=40,
        scale_partitions=[1, 10, 100, 1000], scale_connections=[1, 4, 16, 64, 256], scale_seconds=5,
    ),
}
KEY_RANGE = 4096  # keyed records (round-robin keys) so every partition of a topic gets traffic
LIVE = set()  # tool processes running now; killed (by process group) when we are stopped


def _stop(signum, _frame):
    for p in list(LIVE):
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    sys.exit(128 + signum)


SCALE_PARTITION_RATE = 2000  # records/s of 1 KiB for the partition-scaling runs (~2 MiB/s, below every 1-partition peak)


class Runner:
    def __init__(self, a):
        self.a = a
        self.p = PROFILES.get(a.profile, {})  # partitions.py has no profile: it sets every knob itself
        self.raw = os.path.join(a.out, "raw", a.target)
        os.makedirs(self.raw, exist_ok=True)
        self.jsonl = open(os.path.join(self.raw, "runs.jsonl"), "a")
        self.cp = f"{a.libs}/*:{a.benchtool}"
        self.rate_est = {}  # (size, partitions, producers) -> records/s, for sizing the next run
        self.slow = a.target.endswith("s3")
        self.key_range = KEY_RANGE  # partitions.py raises it so every partition of a large topic gets keys
        self.producer_props = []  # extra KEY=VALUE producer properties (partitions.py's PRODUCER_PROPS)

    # ---- process helpers -------------------------------------------------------------------
    def java(self, cls, args, heap="512m"):
        return ["java", f"-Xmx{heap}", "-XX:+UseG1GC", "-XX:TieredStopAtLevel=4",
                f"-Dlog4j2.configurationFile={HERE}/kafka/log4j2-tools.properties", "-cp", self.cp, cls] + [str(x) for x in args]

    def start(self, cmd, name):
        f = open(os.path.join(self.raw, name + ".txt"), "w")
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        LIVE.add(p)
        return p, f

    def finish(self, procs, timeout):
        """Wait for (Popen, file) pairs; kill the process groups left at the deadline. Returns [(text, timed_out)]."""
        deadline = time.monotonic() + timeout
        out = []
        for p, f in procs:
            timed_out = False
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
                for sig in (signal.SIGTERM, signal.SIGKILL):
                    try:
                        os.killpg(p.pid, sig)
                        p.wait(5)
                        break
                    except (subprocess.TimeoutExpired, ProcessLookupError):
                        pass
            LIVE.discard(p)
            f.close()
            with open(f.name) as r:
                out.append((r.read(), timed_out))
        return out

    def run(self, cmd, name, timeout):
        return self.finish([self.start(cmd, name)], timeout)[0]

    def log(self, rec):
        rec = dict(rec, target=self.a.target, t=time.time())
        self.jsonl.write(json.dumps(rec) + "\n")
        self.jsonl.flush()
        short = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in rec.items()
                 if k in ("kind", "size", "partitions", "producers", "connections", "rep", "mode", "mb_per_s",
                          "records_per_s", "p99_ms", "cpu_s_per_gb", "complete")}
        print(f"[{self.a.target}] {short}", file=sys.stderr, flush=True)

    # ---- broker-side counters --------------------------------------------------------------
    def scrape(self, url):
        if not url:
            return {}
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return parse.prometheus(r.read().decode())
        except Exception as e:  # a missing counter must not fail the run
            print(f"scrape {url}: {e}", file=sys.stderr)
            return {}

    def snapshot(self):
        s = {"cpu": parse.proc_cpu_seconds(self.a.pid)}
        m = self.scrape(self.a.metrics_url)
        if m:
            if any(k.startswith("skiff_object_requests_total") for k in m):
                s["puts"] = parse.prom_sum(m, "skiff_object_requests_total", op="put")
                s["gets"] = parse.prom_sum(m, "skiff_object_requests_total", op="get")
            else:  # older builds: one PUT per flush
                s["puts"] = parse.prom_sum(m, "skiff_flushes_total")
            s["commit_s"] = m.get("skiff_flush_commit_seconds_sum", 0.0)
            s["commits"] = m.get("skiff_flush_commit_seconds_count", 0.0)
        mm = self.scrape(self.a.minio_metrics_url)
        if mm:
            s["s3_put"] = parse.prom_sum(mm, "minio_s3_requests_total", api="putobject")
            s["s3_get"] = parse.prom_sum(mm, "minio_s3_requests_total", api="getobject")
        return s

    def measured(self, fn):
        """Run fn() while sampling the broker's RSS; add CPU seconds and counter deltas to its result."""
        rss = []
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                v = parse.proc_status_kib(self.a.pid, "VmRSS")
                if v:
                    rss.append(v)
                stop.wait(0.5)
        th = threading.Thread(target=sample, daemon=True)
        before = self.snapshot()
        th.start()
        res = fn()
        stop.set()
        th.join()
        after = self.snapshot()
        res["cpu_s"] = after["cpu"] - before["cpu"]
        res["load1"] = float(open("/proc/loadavg").read().split()[0])  # other work on a shared machine
        res["rss_max_mib"] = max(rss) / 1024 if rss else None
        for k in ("puts", "gets", "commit_s", "commits", "s3_put", "s3_get"):
            if k in before and k in after:
                res[k] = after[k] - before[k]
        if res.get("commits"):
            res["flush_commit_avg_ms"] = 1000 * res["commit_s"] / res["commits"]
        b = res.get("bytes") or 0
        if b > 0:
            gb = b / 1e9
            res["cpu_s_per_gb"] = res["cpu_s"] / gb
            if "puts" in res:
                res["puts_per_gb"] = res["puts"] / gb
                res["object_requests_per_gb"] = (res["puts"] + res.get("gets", 0)) / gb
            if "s3_put" in res:
                res["s3_requests_per_gb"] = (res["s3_put"] + res.get("s3_get", 0)) / gb
        return res

    # ---- tools -------------------------------------------------------------------------------
    def create_topics(self, partitions, names):
        if not names:
            return
        text, to = self.run(self.java("BenchTool", ["create-topics", self.a.bootstrap, partitions] + names),
                            f"create-{partitions}p-{names[0]}", 120 + len(names) * partitions // 50)
        if to or '"created"' not in text:
            raise SystemExit(f"[{self.a.target}] topic creation failed:\n{text[-2000:]}")

    def pp_cmd(self, topic, records, size, rate, warmup=0):
        extra = ["--warmup-records", warmup] if warmup else []
        return self.java("org.apache.kafka.tools.ProducerPerformance", extra + [
            "--bootstrap-server", self.a.bootstrap, "--topic", topic, "--num-records", records,
            "--record-size", size, "--throughput", rate, "--key-distribution", "range",
            "--record-key-range", self.key_range, "--reporting-interval", 1000,
            "--command-property", "acks=all"] + self.producer_props)

    def pilot(self, size, partitions):
        """~4 s unthrottled run: warms the broker up and estimates the rate used to size the real runs."""
        topic = f"pilot-{size}-{partitions}p"  # created up front by matrix()
        text, _ = self.run(self.pp_cmd(topic, 10**9, size, -1), f"pilot-{size}-{partitions}p", 6.5)
        iv = parse.producer_perf_intervals(text)
        rate = max([i["records_per_s"] for i in iv[1:]] or [i["records_per_s"] for i in iv] or [1000.0])
        print(f"[{self.a.target}] pilot {size} B x {partitions} partitions: ~{rate:.0f} records/s", file=sys.stderr)
        return rate

    def produce(self, topic, size, producers, records_total, rate, name, timeout, warmup=0):
        per = max(1, records_total // producers)
        per_rate = rate / producers if rate > 0 else -1
        procs = [self.start(self.pp_cmd(topic, per, size, f"{per_rate:.0f}" if rate > 0 else -1, warmup // producers),
                            f"{name}-{i}" if producers > 1 else name) for i in range(producers)]
        t0 = time.monotonic()
        outs = self.finish(procs, timeout)
        wall = time.monotonic() - t0
        results = []
        for text, _ in outs:
            r = parse.producer_perf(text) or parse.producer_perf_partial(text)
            if r:
                results.append(r)
        if not results:
            return {"complete": False, "bytes": 0, "wall_s": wall, "error": "no output"}
        done = [r for r in results if r["p99_ms"] is not None]
        agg = {
            "records": sum(r["records"] for r in results),
            "records_per_s": sum(r["records_per_s"] for r in results),
            "mb_per_s": sum(r["mb_per_s"] for r in results),
            "avg_ms": sum(r["avg_ms"] for r in results) / len(results),
            "max_ms": max(r["max_ms"] for r in results),
            # several producers: the worst producer's percentile (conservative)
            "p50_ms": max(r["p50_ms"] for r in done) if done else None,
            "p99_ms": max(r["p99_ms"] for r in done) if done else None,
            "p999_ms": max(r["p999_ms"] for r in done) if done else None,
            "complete": len(done) == producers,
            "wall_s": wall,
        }
        for k in ("steady_p50_ms", "steady_p99_ms", "steady_p999_ms", "steady_max_ms"):
            vals = [r[k] for r in done if k in r]
            if vals:
                agg[k] = max(vals)
        agg["bytes"] = agg["records"] * size
        return agg

    # ---- the measurements ------------------------------------------------------------------------
    def matrix(self):
        p, reps, secs = self.p, self.p["reps"], self.p["seconds"]
        topics = {}
        for size in p["sizes"]:
            for parts in p["partitions"]:
                for prods in p["producers"]:
                    for rep in range(reps):
                        topics.setdefault(parts, []).append(f"p{size}-{parts}p-{prods}x-r{rep}")
            for parts in p["partitions"]:
                topics.setdefault(parts, []).append(f"pilot-{size}-{parts}p")
        for size, parts in p["fixed"]:
            for rep in range(reps):
                topics.setdefault(parts, []).append(f"f{size}-{parts}p-r{rep}")
        for size in p["e2e_sizes"]:
            for rep in range(reps):
                topics.setdefault(1, []).append(f"e2e{size}-r{rep}")
        for parts, names in topics.items():
            self.create_topics(parts, names)

        peak = {}
        for size in p["sizes"]:
            for parts in p["partitions"]:
                base = self.pilot(size, parts)
                for prods in p["producers"]:
                    key = (size, parts, prods)
                    rates = []
                    for rep in range(reps):
                        est = self.rate_est.get(key) or self.rate_est.get((size, parts, 1)) or base
                        records = max(50, int(est * secs))  # small floor: slow targets (MinIO, 1 partition) stay time-bounded
                        topic = f"p{size}-{parts}p-{prods}x-r{rep}"
                        r = self.measured(lambda: self.produce(topic, size, prods, records, -1, f"produce-{topic}",
                                                               max(4 * secs + 30, 60)))
                        self.log(dict(r, kind="produce", mode="max", size=size, partitions=parts, producers=prods,
                                      rep=rep, topic=topic))
                        if r.get("records_per_s"):
                            self.rate_est[key] = r["records_per_s"]
                            rates.append(r["records_per_s"])
                    if rates:
                        peak[key] = sorted(rates)[len(rates) // 2]

        # Latency at ~50% of the measured peak (1 producer).
        for size, parts in p["fixed"]:
            pk = peak.get((size, parts, 1)) or self.rate_est.get((size, parts, 1))
            if not pk:
                continue
            rate = max(1, int(pk * 0.5))
            for rep in range(reps):
                topic = f"f{size}-{parts}p-r{rep}"
                # the first 2 s (client JIT, connection set-up) are reported separately as warm-up
                r = self.measured(lambda: self.produce(topic, size, 1, max(200, rate * (secs + 2)), rate,
                                                       f"fixed-{topic}", max(4 * secs + 30, 60), warmup=min(rate * 2, 100000)))
                self.log(dict(r, kind="produce", mode="fixed", rate=rate, size=size, partitions=parts, producers=1,
                              rep=rep, topic=topic))

        # Catch-up read of what a max-throughput run produced.
        for size, parts in p["consume"]:
            for rep in range(reps):
                topic = f"p{size}-{parts}p-1x-r{rep}"
                expect = self.produced(topic)
                if not expect:
                    continue

                def consume():
                    text, to = self.run(self.java("BenchTool", ["consume", self.a.bootstrap, topic, expect, 10000]),
                                        f"consume-{topic}", 180)
                    j = parse.last_json_line(text) or {"complete": False, "bytes": 0}
                    j["timed_out"] = to
                    return j
                r = self.measured(consume)
                self.log(dict(r, kind="consume", size=size, partitions=parts, rep=rep, topic=topic, expected=expect))

        # End-to-end latency: send one record synchronously, poll it back, repeat.
        n = p["e2e_messages_slow"] if self.slow else p["e2e_messages"]
        for size in p["e2e_sizes"]:
            for rep in range(reps):
                topic = f"e2e{size}-r{rep}"

                def e2e():
                    text, to = self.run(self.java("org.apache.kafka.tools.EndToEndLatency",
                                                  [self.a.bootstrap, topic, n, "all", size]), f"e2e-{topic}", 240)
                    r = parse.end_to_end(text) or {}
                    r.update(messages=n, timed_out=to)
                    return r
                r = self.measured(e2e)
                self.log(dict(r, kind="e2e", size=size, rep=rep, topic=topic))

    def produced(self, topic):
        with open(self.jsonl.name) as f:
            for line in f:
                j = json.loads(line)
                if j.get("topic") == topic and j.get("kind") == "produce":
                    return j.get("records")
        return None

    def scaling(self):
        p, secs = self.p, self.p["scale_seconds"]
        names = {parts: f"sp{parts}" for parts in p["scale_partitions"]}
        for parts, name in names.items():
            self.create_topics(parts, [name])
        self.create_topics(16, [f"sc{c}" for c in p["scale_connections"]])
        for parts, topic in names.items():
            # Unmeasured warm-up: every partition gets written once (Kafka opens logs, Skiff loads
            # partition writers) so the measured run sees a steady state.
            self.run(self.pp_cmd(topic, max(2000, 4 * parts), 1024, -1), f"scale-partitions-{parts}-warmup", 90)
            rate = SCALE_PARTITION_RATE
            r = self.measured(lambda: self.produce(topic, 1024, 1, rate * (secs + 2), rate, f"scale-partitions-{parts}",
                                                   4 * secs + 60, warmup=rate * 2))
            self.log(dict(r, kind="scale_partitions", partitions=parts, rate=rate, size=1024))
        for conns in p["scale_connections"]:
            topic = f"sc{conns}"
            # Unthrottled; sized from the 1 KiB estimate so a run lasts about `secs`.
            est = self.rate_est.get((1024, 16, 1)) or 20000
            records = max(20 * conns, int(est * secs))

            def mp():
                text, to = self.run(self.java("BenchTool", ["multi-produce", self.a.bootstrap, topic, conns, 16,
                                                            records, 1024, -1], heap="1g"),
                                    f"scale-connections-{conns}", 6 * secs + 90)
                j = parse.last_json_line(text) or {"complete": False}
                j.update(timed_out=to, bytes=(j.get("records", 0) if j.get("records_per_s") else 0) * 1024)
                return j
            r = self.measured(mp)
            self.log(dict(r, kind="scale_connections", connections=conns, size=1024, partitions=16))

    def summary(self):
        self.log({"kind": "target", "vm_hwm_mib": (parse.proc_status_kib(self.a.pid, "VmHWM") or 0) / 1024,
                  "cpu_total_s": parse.proc_cpu_seconds(self.a.pid)})


def main():
    ap = argparse.ArgumentParser()
    for k in ("target", "bootstrap", "out", "profile", "libs", "benchtool"):
        ap.add_argument("--" + k, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--metrics-url")
    ap.add_argument("--minio-metrics-url")
    ap.add_argument("--scaling", action="store_true")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    r = Runner(a)
    r.matrix()
    if a.scaling:
        r.scaling()
    r.summary()


if __name__ == "__main__":
    main()
