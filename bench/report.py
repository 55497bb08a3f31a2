"""Turn DIR/raw/*/runs.jsonl (+ DIR/raw_limits.json) into DIR/results.md, DIR/results.json and PNG plots.

  python report.py DIR

Every cell is the median over repetitions with [min–max]; ratio columns are Skiff / Kafka of the
medians (throughput: higher is better for Skiff; latency, CPU, memory: lower is better).
"""
import glob
import json
import os
import statistics
import sys
from collections import defaultdict

TARGETS = ["kafka", "skiff-local", "skiff-s3"]
LABEL = {"kafka": "Kafka 4.4", "skiff-local": "Skiff (local dir)", "skiff-s3": "Skiff (MinIO)"}
COLORS = {"kafka": "tab:blue", "skiff-local": "tab:orange", "skiff-s3": "tab:green"}


def load(d):
    runs = []
    for f in sorted(glob.glob(os.path.join(d, "raw", "*", "runs.jsonl"))):
        with open(f) as fh:
            runs += [json.loads(line) for line in fh if line.strip()]
    for r in runs:  # derived here too, for records written before bench.py computed it
        if r.get("flush_commit_avg_ms") is None and r.get("commits"):
            r["flush_commit_avg_ms"] = 1000 * r["commit_s"] / r["commits"]
        # Object PUTs per second: PUTs per GB of record values times GB/s of record values.
        if r.get("puts_per_gb") is not None and r.get("mb_per_s"):
            r["puts_per_s"] = r["puts_per_gb"] * r["mb_per_s"] * 1048576 / 1e9
    return runs


def fmt(x):
    if x is None:
        return "–"
    ax = abs(x)
    if ax >= 1000:
        return f"{x:,.0f}"
    if ax >= 100:
        return f"{x:.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def stats(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def cell(s):
    if not s:
        return "–"
    if s["n"] == 1 or s["min"] == s["max"]:
        return fmt(s["median"])
    return f"{fmt(s['median'])} [{fmt(s['min'])}–{fmt(s['max'])}]"


def ratio(a, b):
    if not a or not b or not b["median"]:
        return "–"
    return f"{a['median'] / b['median']:.2f}×"


class Report:
    def __init__(self, d):
        self.d = d
        self.runs = load(d)
        self.targets = [t for t in TARGETS if any(r["target"] == t for r in self.runs)]
        self.skiffs = [t for t in self.targets if t != "kafka"]
        self.md = []
        self.agg = []

    def group(self, kind, keys, **match):
        g = defaultdict(lambda: defaultdict(list))
        for r in self.runs:
            if r.get("kind") != kind or any(r.get(k) != v for k, v in match.items()):
                continue
            g[tuple(r.get(k) for k in keys)][r["target"]].append(r)
        return dict(sorted(g.items(), key=lambda kv: tuple(x if x is not None else -1 for x in kv[0])))

    def table(self, title, kind, keys, metric, note="", **match):
        """One Markdown table: a row per key tuple, a column per target, Skiff/Kafka ratios."""
        groups = self.group(kind, keys, **match)
        if not any(r.get(metric) is not None for by_t in groups.values() for rs in by_t.values() for r in rs):
            return
        head = list(keys)
        for t in self.targets:
            head.append(LABEL[t])
            if t != "kafka" and "kafka" in self.targets:
                head.append(f"{t.split('-')[1]}/Kafka")
        self.md += [f"### {title}", ""] + ([note, ""] if note else [])
        self.md += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for key, by_t in groups.items():
            row = [fmt(k) if isinstance(k, float) else str(k) for k in key]
            ks = stats([r.get(metric) for r in by_t.get("kafka", [])])
            for t in self.targets:
                s = stats([r.get(metric) for r in by_t.get(t, [])])
                self.agg.append({"kind": kind, "metric": metric, "target": t, **dict(zip(keys, key)), **(s or {})})
                row.append(cell(s))
                if t != "kafka" and "kafka" in self.targets:
                    row.append(ratio(s, ks))
            self.md.append("| " + " | ".join(row) + " |")
        self.md.append("")

    def series(self, kind, x, y):
        """{target: (xs, medians of y)} over the runs of KIND, for a plot."""
        out = {}
        for t in self.targets:
            pts = defaultdict(list)
            for r in self.runs:
                if r["target"] == t and r.get("kind") == kind and r.get(y) is not None:
                    pts[r[x]].append(r[y])
            if pts:
                xs = sorted(pts)
                out[t] = (xs, [statistics.median(pts[v]) for v in xs])
        return out

    def raw_limits(self):
        p = os.path.join(self.d, "raw_limits.json")
        if not os.path.exists(p):
            return {}
        with open(p) as f:
            rl = json.load(f)
        dk = rl.get("disk", {})
        rows = [
            ("disk sequential write, 4 MiB O_DIRECT", dk.get("seq_write_direct", {}) and f"{fmt(dk['seq_write_direct']['mb_per_s'])} MiB/s"),
            ("disk sequential write, 4 MiB + fdatasync at end", dk.get("seq_write_fdatasync", {}) and f"{fmt(dk['seq_write_fdatasync']['mb_per_s'])} MiB/s"),
            ("fdatasync of 4 KiB appends", dk.get("fdatasync_4k") and
             f"{fmt(dk['fdatasync_4k']['per_s'])}/s (p50 {fmt(dk['fdatasync_4k']['p50_ms'])} ms, p99 {fmt(dk['fdatasync_4k']['p99_ms'])} ms)"),
            ("loopback TCP, 1 stream", rl.get("tcp") and f"{fmt(rl['tcp']['loopback_mb_per_s'])} MiB/s"),
        ]
        for size, v in (rl.get("s3") or {}).items():
            for op in ("put", "get"):
                o = v[op]
                rows.append((f"MinIO {op.upper()} {size}", f"{fmt(o['mb_per_s'])} MiB/s sequential (p50 {fmt(o['p50_ms'])} ms, "
                             f"p99 {fmt(o['p99_ms'])} ms); {fmt(o['mb_per_s_x4'])} MiB/s with 4 concurrent"))
        self.md += ["### Raw limits of this machine", "", "| what | measured |", "|---|---|"]
        self.md += [f"| {a} | {b or '–'} |" for a, b in rows] + [""]
        return rl

    def plots(self):
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            self.md += ["(matplotlib missing: no plots)", ""]
            return []
        made = []
        colors, series = COLORS, self.series

        for kind, x, panels, fname, title in [
            ("scale_partitions", "partitions", [("cpu_s_per_gb", "broker CPU s / GB"), ("steady_p99_ms", "produce p99 (ms, steady)"),
                                                ("rss_max_mib", "broker RSS (MiB)")],
             "scale_partitions.png", "Cost vs partition count (1 producer, 1 KiB, fixed 2k records/s)"),
            ("scale_connections", "connections", [("mb_per_s", "produce MiB/s"), ("rss_max_mib", "broker RSS (MiB)"),
                                                  ("cpu_s_per_gb", "broker CPU s / GB"), ("p99_ms", "produce p99 (ms)")],
             "scale_connections.png", "Cost vs producer connections (1 KiB, 16 partitions, unthrottled)"),
        ]:
            if not any(r.get("kind") == kind for r in self.runs):
                continue
            fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
            for ax, (y, ylabel) in zip(axes, panels):
                for t, (xs, ys) in series(kind, x, y).items():
                    ax.plot(xs, ys, marker="o", label=LABEL[t], color=colors[t])
                ax.set_xscale("log")
                ax.set_xlabel(x)
                ax.set_ylabel(ylabel)
                ax.grid(True, alpha=0.3)
            axes[0].legend(fontsize=8)
            fig.suptitle(title, fontsize=10)
            fig.tight_layout()
            fig.savefig(os.path.join(self.d, fname), dpi=110)
            plt.close(fig)
            made.append(fname)

        # Unthrottled produce throughput for every matrix cell.
        groups = self.group("produce", ["size", "partitions", "producers"], mode="max")
        if groups:
            labels = [f"{s}B/{p}p/{n}x" for s, p, n in groups]
            fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(labels) + 2), 4))
            w = 0.8 / max(1, len(self.targets))
            for i, t in enumerate(self.targets):
                ys = [statistics.median([r["mb_per_s"] for r in by_t.get(t, []) if r.get("mb_per_s") is not None] or [0])
                      for by_t in groups.values()]
                ax.bar([j + i * w for j in range(len(labels))], ys, w, label=LABEL[t], color=colors[t])
            ax.set_xticks([j + w * (len(self.targets) - 1) / 2 for j in range(len(labels))])
            ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
            ax.set_ylabel("produce MiB/s (median)")
            ax.set_yscale("log")
            ax.legend(fontsize=8)
            ax.grid(True, axis="y", alpha=0.3)
            fig.tight_layout()
            fig.savefig(os.path.join(self.d, "produce_throughput.png"), dpi=110)
            plt.close(fig)
            made.append("produce_throughput.png")
        return made

    def build(self):
        env = ""
        p = os.path.join(self.d, "environment.txt")
        if os.path.exists(p):
            with open(p) as f:
                env = f.read()
        prof = "full" if "profile: full" in env else "quick"
        self.md += [f"# Skiff vs Apache Kafka — {os.path.basename(os.path.normpath(self.d))}", "",
                    "Produced by `bench/run.sh " + prof + "`; method, settings and caveats in `bench/README.md`. "
                    "Cells: median [min–max] over repetitions. Ratio columns: Skiff ÷ Kafka "
                    "(throughput: >1 is better for Skiff; latency / CPU / memory: <1 is better). "
                    "MiB/s counts record values (as ProducerPerformance does); GB = 10⁹ bytes of record values.", "",
                    "```", env.strip(), "```", ""]
        rl = self.raw_limits()
        self.md += ["## Produce", ""]
        K = ["size", "partitions", "producers"]
        self.table("Unthrottled produce throughput (MiB/s), acks=all", "produce", K, "mb_per_s", mode="max")
        self.table("Unthrottled produce throughput (records/s)", "produce", K, "records_per_s", mode="max")
        self.table("Produce latency p50 (ms), unthrottled", "produce", K, "p50_ms", mode="max",
                   note="Unthrottled runs measure queueing in the producer as much as the broker; see the fixed-rate table.")
        self.table("Produce latency p99 (ms), unthrottled", "produce", K, "p99_ms", mode="max")
        self.table("Broker CPU seconds per GB produced, unthrottled", "produce", K, "cpu_s_per_gb", mode="max")
        KF = ["size", "partitions", "rate"]
        self.md += ["## Produce latency at ~50% of each broker's own peak", "",
                    "Each broker is driven at half of ITS OWN unthrottled median (1 producer), so latencies are "
                    "compared at equal relative load; the first table gives the rate each broker got.", ""]
        for metric, name in (("rate", "target rate (records/s)"), ("steady_p50_ms", "p50 (steady state, after 2 s warm-up)"),
                             ("steady_p99_ms", "p99 (steady state)"), ("steady_p999_ms", "p99.9 (steady state)"),
                             ("p50_ms", "p50 (all records, incl. client warm-up)"), ("p99_ms", "p99 (all records)"),
                             ("mb_per_s", "achieved MiB/s")):
            self.table(f"Fixed-rate produce {name}", "produce", ["size", "partitions"], metric, mode="fixed")
        self.md += ["## Consume (catch-up read of an unthrottled run's topic)", ""]
        self.table("Consume throughput (MiB/s)", "consume", ["size", "partitions"], "mb_per_s")
        self.table("Broker CPU seconds per GB consumed", "consume", ["size", "partitions"], "cpu_s_per_gb")
        self.md += ["## End-to-end latency (EndToEndLatency: send one record with acks=all, poll it back)", ""]
        self.table("End-to-end p50 (ms)", "e2e", ["size"], "p50_ms")
        self.table("End-to-end p99 (ms)", "e2e", ["size"], "p99_ms")
        self.md += ["## Resources", ""]
        self.table("Peak broker RSS over the whole run (VmHWM, MiB)", "target", [], "vm_hwm_mib")
        self.table("Machine load average (1 min) during this target's unthrottled produce runs", "produce", [], "load1",
                   mode="max", note="2 cores. Other engineers' builds share the machine; compare ratios only where loads are alike.")
        self.table("Skiff object PUTs per GB produced, unthrottled", "produce", K, "puts_per_gb", mode="max")
        self.table("Skiff flush→commit latency, average (ms), unthrottled", "produce", K, "flush_commit_avg_ms", mode="max",
                   note="From skiff_flush_commit_seconds: first byte buffered to commit applied (includes flush_interval_ms).")
        self.table("Skiff object requests (PUT+GET) per GB consumed", "consume", ["size", "partitions"], "object_requests_per_gb",
                   note="Includes background compaction that happened to run during the read (PUTs with no producer).")
        # MinIO's own counters (minio_s3_requests_total) are kept in runs.jsonl but not tabulated: its
        # metrics endpoint refreshes lazily, so per-run deltas are unreliable (0 or doubled).
        self.md += ["## Scaling", ""]
        self.table("Partition count: broker CPU s/GB at 2k records/s of 1 KiB", "scale_partitions", ["partitions"], "cpu_s_per_gb")
        self.table("Partition count: produce p99 (ms, steady state) at 2k records/s of 1 KiB", "scale_partitions", ["partitions"], "steady_p99_ms")
        self.table("Partition count: Skiff object PUTs per second at 2k records/s of 1 KiB", "scale_partitions", ["partitions"], "puts_per_s",
                   note="One object per flush across all partitions: the PUT rate should not grow with the partition count.")
        self.table("Partition count: produce p99 (ms, all records incl. warm-up) at 2k records/s of 1 KiB", "scale_partitions", ["partitions"], "p99_ms")
        self.table("Connections: unthrottled throughput (MiB/s), 1 KiB, 16 partitions", "scale_connections", ["connections"], "mb_per_s")
        self.table("Connections: broker RSS max during run (MiB)", "scale_connections", ["connections"], "rss_max_mib")
        self.table("Connections: broker CPU s/GB", "scale_connections", ["connections"], "cpu_s_per_gb")
        for png in self.plots():
            self.md += [f"![{png}]({png})", ""]
        incomplete = [r for r in self.runs if r.get("complete") is False or r.get("timed_out")]
        if incomplete:
            self.md += ["## Incomplete runs", "", "Stopped by their timeout or missing output (throughput from interval "
                        "lines, no percentiles):", ""]
            self.md += [f"- {r['target']} {r['kind']} {r.get('topic') or r.get('partitions') or r.get('connections')}"
                        for r in incomplete] + [""]
        with open(os.path.join(self.d, "results.md"), "w") as f:
            f.write("\n".join(self.md))
        with open(os.path.join(self.d, "results.json"), "w") as f:
            json.dump({"environment": env, "raw_limits": rl, "aggregates": self.agg, "runs": self.runs}, f, indent=1)


if __name__ == "__main__":
    Report(sys.argv[1]).build()
    print(os.path.join(sys.argv[1], "results.md"))
