#!/usr/bin/env python3
"""Turns bench/compaction.sh's raw/runs.jsonl into the markdown table of results.md."""
import json
import os
import statistics
import sys


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    out = sys.argv[1]
    runs = [json.loads(l) for l in open(os.path.join(out, "raw", "runs.jsonl")) if l.strip()]
    env = open(os.path.join(out, "environment.txt")).read()
    print("# Compacted topics: the cleaner's cost (bench/compaction.sh)\n")
    print("```\n" + env.strip() + "\n```\n")
    print("## Produce latency with and without the cleaner (same workload, same binary)\n")
    print("| storage | cleaner | records/s | p50 ms | p99 ms | p99.9 ms | errors | p99 ratio (on ÷ off) |")
    print("|---|---|---|---|---|---|---|---|")
    for target in sorted({r["target"] for r in runs}):
        off = [r for r in runs if r["target"] == target and r["mode"] == "off"]
        on = [r for r in runs if r["target"] == target and r["mode"] == "on"]
        p99_off = med([r["produce"]["p99_ms"] for r in off])
        for label, rs in (("off", off), ("on", on)):
            if not rs:
                continue
            p = [r["produce"] for r in rs]
            ratio = med([x["p99_ms"] for x in p]) / p99_off if label == "on" and p99_off else None
            print(f"| {target} | {label} | {med([x['records_per_s'] for x in p]):.0f} | {med([x['p50_ms'] for x in p]):.2f} "
                  f"| {med([x['p99_ms'] for x in p]):.2f} | {med([x['p999_ms'] for x in p]):.2f} "
                  f"| {sum(x['errors'] for x in p)} | {'' if ratio is None else f'{ratio:.2f}'} |")
    print("\n## Cleaner passes (committed; sampled once a second, so two passes inside one second show as one)\n")
    print("| storage | pass | cleanable MiB | read MiB | written MiB | read ÷ cleanable | written ÷ cleanable | GETs | PUTs |")
    print("|---|---|---|---|---|---|---|---|---|")
    worst_r, worst_w = 0.0, 0.0
    for r in runs:
        if r["mode"] != "on":
            continue
        for i, p in enumerate(r["passes"], 1):
            c = p["cleanable_bytes"] or float("nan")
            rr, wr = p["read_bytes"] / c, p["written_bytes"] / c
            worst_r, worst_w = max(worst_r, rr), max(worst_w, wr)
            print(f"| {r['target']} | {i} | {p['cleanable_bytes'] / 2**20:.1f} | {p['read_bytes'] / 2**20:.1f} "
                  f"| {p['written_bytes'] / 2**20:.1f} | {rr:.3f} | {wr:.3f} | {p['gets']:.0f} | {p['puts']:.0f} |")
    print(f"\nWorst pass: read ÷ cleanable {worst_r:.3f}, written ÷ cleanable {worst_w:.3f} (target ≤ 1.2 each).")
    print("\n## Defaults: only `cleanup.policy=compact` set (segment.bytes 64 MiB, backoff 15 s)\n")
    print("| storage | first pass after topic creation, s | passes | produce p99 ms |")
    print("|---|---|---|---|")
    for r in runs:
        if r["mode"] != "defaults":
            continue
        first = f"{r['passes'][0]['at'] - r['started']:.1f}" if r["passes"] else "none within the run"
        print(f"| {r['target']} | {first} | {len(r['passes'])} | {r['produce']['p99_ms']:.2f} |")


if __name__ == "__main__":
    main()
