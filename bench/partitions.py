"""One point of the partition sweep (bench/partitions.sh) against ONE running, freshly started broker:
create a topic of P partitions, warm it up (every partition written), then Kafka's ProducerPerformance
at a fixed rate with acks=all. Appends one JSON object (kind "sweep") to OUT/raw/TARGET/runs.jsonl;
partitions_report.py turns those into results.md, results.json and plots.

  python partitions.py --target NAME --bootstrap HOST:PORT --pid PID --out DIR --libs KAFKA_LIBS \
      --benchtool CLASSDIR --partitions P --rate R --size S --duration SECS --warmup SECS --rep N \
      [--metrics-url URL] [--minio-metrics-url URL] [--data-dir DIR]

Reuses bench.py's Runner (tool processes with timeouts, CPU / RSS sampling, counter deltas).
"""
import argparse
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import bench
import parse


CREATE_STEP = 5000  # partitions per CreateTopics / CreatePartitions request (see main)


_CLIENT_LOG = re.compile(r"^\[[0-9-]+ [0-9:,]+\] (WARN|ERROR) ")
_CLIENT_ERR = re.compile(r"Error: ([A-Z_]+)|due to ([A-Za-z0-9_.$]+)|([A-Za-z0-9_.$]+(?:Exception|Error))")


def compact_log(path, keep=20):
    """Keep a tool's output small: a producer retrying against 10,000 partitions that Kafka has not
    created yet logs a WARN per partition and attempt (~90 MB). Keeps every other line, the first KEEP
    WARN/ERROR lines, and a count of the rest by error."""
    with open(path, errors="replace") as f:
        lines = f.readlines()
    noisy = [i for i, line in enumerate(lines) if _CLIENT_LOG.match(line)]
    if len(noisy) <= keep:
        return
    counts = {}
    for i in noisy[keep:]:
        m = _CLIENT_ERR.search(lines[i])
        k = next((g for g in m.groups() if g), "other") if m else "other"
        counts[k] = counts.get(k, 0) + 1
    drop = set(noisy[keep:])
    with open(path, "w") as f:
        f.writelines(line for i, line in enumerate(lines) if i not in drop)
        f.write(f"[partitions.py] {len(drop)} more client WARN/ERROR lines dropped: "
                + ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])) + "\n")


def timeouts(partitions, duration, warmup_s):
    """(create, warm-up, measured) timeouts in seconds; partitions.sh sums the same formula (+ slack)."""
    # Kafka answers CreateTopics before its broker has created every log, and answers produces to
    # the missing ones with NOT_LEADER_OR_FOLLOWER (the producer retries): the warm-up absorbs that,
    # so its bound grows with the partition count.
    return 120 + partitions // 50, 3 * warmup_s + 60 + partitions // 20, 3 * duration + 90


def main():
    ap = argparse.ArgumentParser()
    for k in ("target", "bootstrap", "out", "libs", "benchtool"):
        ap.add_argument("--" + k, required=True)
    for k in ("pid", "partitions", "rate", "size", "duration", "warmup", "rep"):
        ap.add_argument("--" + k, type=int, required=True)
    ap.add_argument("--key-range", type=int, default=0, help="0: max(4096, 10 x partitions)")
    ap.add_argument("--metrics-url")
    ap.add_argument("--minio-metrics-url")
    ap.add_argument("--data-dir")
    ap.add_argument("--producer-props", default="", help="extra KEY=VALUE producer properties, space separated")
    a = ap.parse_args()
    a.profile = None
    signal.signal(signal.SIGTERM, bench._stop)
    signal.signal(signal.SIGINT, bench._stop)

    r = bench.Runner(a)
    parts, rate, size = a.partitions, a.rate, a.size
    # ProducerPerformance's range keys are the integers [0, key_range) in turn, hashed onto partitions;
    # with ten keys per partition every partition gets traffic (4,096 keys would leave most of a
    # 10,000-partition topic idle).
    r.key_range = a.key_range or max(bench.KEY_RANGE, 10 * parts)
    r.producer_props = a.producer_props.split()
    name = f"sweep-{parts}p-r{a.rep}"
    # The warm-up writes every key once at the measured rate (Kafka opens every log, Skiff creates
    # every partition's writer), and at least `warmup` seconds.
    warm_records = max(rate * a.warmup, r.key_range)
    t_create, t_warm, t_run = timeouts(parts, a.duration, -(-warm_records // rate))

    t0 = time.monotonic()
    # Kafka's controller refuses a user operation of more than 10,000 metadata records
    # (QuorumController.MAX_RECORDS_PER_USER_OP: "Unable to perform excessively large batch
    # operation"), so a topic of 10,000 partitions cannot be created in one request: every target
    # gets the topic the same way, created with up to CREATE_STEP partitions, then grown by
    # CreatePartitions in steps of CREATE_STEP.
    r.create_topics(min(parts, CREATE_STEP), [name])
    have = min(parts, CREATE_STEP)
    while have < parts:
        have = min(parts, have + CREATE_STEP)
        text, to = r.run(r.java("org.apache.kafka.tools.TopicCommand", [
            "--bootstrap-server", a.bootstrap, "--alter", "--topic", name, "--partitions", have]),
            f"create-partitions-{have}-{name}", t_create)
        if to or "Error" in text or "Exception" in text:
            raise SystemExit(f"[{a.target}] growing {name} to {have} partitions failed:\n{text[-2000:]}")
    create_s = time.monotonic() - t0
    print(f"[{a.target}] {parts} partitions created in {create_s:.1f} s", file=sys.stderr, flush=True)

    t0 = time.monotonic()
    text, warm_to = r.run(r.pp_cmd(name, warm_records, size, rate), f"{name}-warmup", t_warm)
    warm_s = time.monotonic() - t0
    warm = parse.producer_perf(text) or parse.producer_perf_partial(text) or {}
    compact_log(os.path.join(r.raw, f"{name}-warmup.txt"))
    print(f"[{a.target}] warm-up: {warm_records} records in {warm_s:.1f} s, {warm.get('records_per_s', 0):.0f} records/s",
          file=sys.stderr, flush=True)

    records = rate * a.duration
    # The first 2 s of the measured run (the client's JIT, connections, metadata of P partitions)
    # are also reported apart as ProducerPerformance's steady-state line.
    steady_after = min(2 * rate, records // 5)
    res = r.measured(lambda: r.produce(name, size, 1, records, rate, name, t_run, warmup=steady_after))
    compact_log(os.path.join(r.raw, f"{name}.txt"))
    res["vm_hwm_mib"] = (parse.proc_status_kib(a.pid, "VmHWM") or 0) / 1024
    res["rss_after_mib"] = (parse.proc_status_kib(a.pid, "VmRSS") or 0) / 1024
    if res.get("wall_s"):
        res["cpu_pct"] = 100 * res["cpu_s"] / res["wall_s"]
    if res.get("records_per_s"):
        res["rate_achieved"] = res["records_per_s"] / rate
    if a.metrics_url:  # Skiff's whole /metrics after the run: flush/commit histograms, index sizes
        try:
            with urllib.request.urlopen(a.metrics_url, timeout=10) as m, \
                    open(os.path.join(r.raw, f"{name}.metrics.txt"), "wb") as f:
                f.write(m.read())
        except OSError as e:
            print(f"[{a.target}] /metrics: {e}", file=sys.stderr)
    if a.data_dir and os.path.isdir(a.data_dir):
        du = subprocess.run(["du", "-sm", a.data_dir], capture_output=True, text=True, timeout=120)
        if du.returncode == 0:
            res["data_dir_mib"] = float(du.stdout.split()[0])
    r.log(dict(res, kind="sweep", partitions=parts, rate=rate, size=size, duration=a.duration, rep=a.rep,
               topic=name, key_range=r.key_range, producer_props=a.producer_props, create_s=create_s, warmup_s=warm_s, warmup_records=warm_records,
               warmup_records_per_s=warm.get("records_per_s"), warmup_timed_out=warm_to))


if __name__ == "__main__":
    main()
