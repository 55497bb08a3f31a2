"""results.md of bench/transactions.sh: medians [min-max] per target, Skiff / Kafka ratios
against the issue #13 targets, and the coordinator failover distribution."""
import json
import os
import statistics
import sys

out = sys.argv[1]
runs = [json.loads(line) for line in open(os.path.join(out, "raw", "runs.jsonl")) if line.strip()]
failovers_path = os.path.join(out, "raw", "failover.jsonl")
failovers = [json.loads(line) for line in open(failovers_path) if line.strip()] if os.path.exists(failovers_path) else []


def values(target, kind, field):
    return [r["result"][field] for r in runs
            if r["target"] == target and r["kind"] == kind and r["result"] and r["result"].get(field) is not None]


def med(vs):
    return statistics.median(vs) if vs else None


def cell(vs, fmt="{:.1f}"):
    if not vs:
        return "n/a"
    if len(vs) == 1:
        return fmt.format(vs[0])
    return f"{fmt.format(med(vs))} [{fmt.format(min(vs))}-{fmt.format(max(vs))}]"


def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b not in (None, 0) else "n/a"


targets = [t for t in ("kafka", "skiff-local", "skiff-s3") if any(r["target"] == t for r in runs)]
print("# Transactions: Skiff vs Apache Kafka\n")
print(open(os.path.join(out, "environment.txt")).read().replace("\n", "  \n"))
print("## Produce throughput (ProducerPerformance, acks=all, unthrottled)\n")
print("| target | plain records/s | plain MiB/s | transactional records/s | transactional MiB/s | txn p99 ms | txn ÷ Kafka txn (target ≥ 0.8) |")
print("|---|---|---|---|---|---|---|")
kafka_txn = med(values("kafka", "produce-txn", "records_per_s"))
for t in targets:
    txn = values(t, "produce-txn", "records_per_s")
    print(f"| {t} | {cell(values(t, 'produce', 'records_per_s'), '{:.0f}')} | {cell(values(t, 'produce', 'mb_per_s'), '{:.2f}')} "
          f"| {cell(txn, '{:.0f}')} | {cell(values(t, 'produce-txn', 'mb_per_s'), '{:.2f}')} "
          f"| {cell(values(t, 'produce-txn', 'p99_ms'))} | {ratio(med(txn), kafka_txn) if t != 'kafka' else '1.00'} |")
print("\n## End-to-end read_committed latency at a fixed rate (BenchTool txn-e2e)\n")
print("| target | received / sent | p50 ms | p99 ms | p99.9 ms | max ms | p99 ÷ Kafka p99 (target ≤ 1.5) |")
print("|---|---|---|---|---|---|---|")
kafka_p99 = med(values("kafka", "e2e-read-committed", "p99_ms"))
for t in targets:
    p99 = values(t, "e2e-read-committed", "p99_ms")
    got = sum(values(t, "e2e-read-committed", "received"))
    sent = sum(values(t, "e2e-read-committed", "records"))
    print(f"| {t} | {got} / {sent} | {cell(values(t, 'e2e-read-committed', 'p50_ms'))} | {cell(p99)} "
          f"| {cell(values(t, 'e2e-read-committed', 'p999_ms'))} | {cell(values(t, 'e2e-read-committed', 'max_ms'))} "
          f"| {ratio(med(p99), kafka_p99) if t != 'kafka' else '1.00'} |")
if failovers:
    ms = sorted(f["failover_ms"] for f in failovers if f["failover_ms"] is not None)
    missing = sum(1 for f in failovers if f["failover_ms"] is None)
    print("\n## Transaction coordinator failover (3 controllers + 3 brokers on MinIO; kill -9 of the coordinator broker → first commitTransaction returning)\n")
    print("| runs | no commit after the kill | p50 ms | p99 ms | max ms | target p99 ≤ 2000 ms |")
    print("|---|---|---|---|---|---|")
    if ms:
        p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
        print(f"| {len(failovers)} | {missing} | {statistics.median(ms):.0f} | {p99} | {ms[-1]} | {'met' if p99 <= 2000 and not missing else 'NOT met'} |")
    else:
        print(f"| {len(failovers)} | {missing} | n/a | n/a | n/a | NOT met |")
    print("\nPer run: " + ", ".join(f"{f['failover_ms']} ms ({len(f['errors'])} client errors)" for f in failovers))
