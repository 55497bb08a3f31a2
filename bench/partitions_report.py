"""Turn bench/partitions.sh's DIR/raw/*/runs.jsonl (kind "sweep") into DIR/results.md, DIR/results.json,
DIR/latency.png and DIR/rss.png.

  python partitions_report.py DIR

Cells are the median over repetitions with [min–max]; ratio columns are Skiff ÷ Kafka of the medians
(report.py's tables; latency, memory, CPU: < 1 is better for Skiff).
"""
import json
import os
import sys

from report import COLORS, LABEL, Report, cell, stats

# Issue #18's budget: tail cache + block cache + write buffer (Skiff's defaults: 256 + 256 + 64 MiB)
# + 128 MiB.
RSS_BUDGET_MIB = 256 + 256 + 64 + 128
# Issue #18's targets for `skiff dev` on a local directory at 10,000 records/s of 1 KiB.
ISSUE_RATE = 10000
ISSUE_TARGETS = [
    (2000, "p99_ms", "p99 (ms)", 25), (2000, "max_ms", "max (ms)", 150),
    (10000, "p99_ms", "p99 (ms)", 50), (10000, "max_ms", "max (ms)", 250),
    (10000, "vm_hwm_mib", "peak RSS, VmHWM (MiB)", RSS_BUDGET_MIB),
]
SUMMARY = [("records_per_s", "records/s"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"), ("p999_ms", "p99.9 ms"),
           ("max_ms", "max ms"), ("steady_p99_ms", "steady p99 ms"), ("steady_max_ms", "steady max ms"),
           ("vm_hwm_mib", "VmHWM MiB"), ("rss_max_mib", "RSS max MiB"), ("cpu_pct", "CPU %"),
           ("create_s", "create s")]


class SweepReport(Report):
    def summary(self):
        rows = self.group("sweep", ["partitions"])
        head = ["target", "partitions", "runs"] + [h for _, h in SUMMARY]
        self.md += ["## Every point", "",
                    "All-records percentiles are ProducerPerformance's summary line over the whole measured run "
                    "(after the separate warm-up); steady = its second line, without the run's first 2 s. VmHWM: "
                    "peak RSS over the broker's life (started fresh for each point). RSS max: VmRSS sampled every "
                    "0.5 s during the measured run. CPU %: broker utime+stime during the run ÷ its wall time "
                    "(200 % = both cores).", "",
                    "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for t in self.targets:
            for (parts,), by_t in rows.items():
                rs = by_t.get(t, [])
                if rs:
                    self.md.append("| " + " | ".join([LABEL[t], str(parts), str(len(rs))] +
                                                     [cell(stats([r.get(k) for r in rs])) for k, _ in SUMMARY]) + " |")
        self.md.append("")

    def issue_targets(self):
        rows = self.group("sweep", ["partitions"])
        lines = []
        for parts in sorted({p for p, _, _, _ in ISSUE_TARGETS}):
            # the latency targets hold only if the broker kept up with the rate
            s = stats([r.get("records_per_s") for r in rows.get((parts,), {}).get("skiff-local", [])])
            if s:
                ok = "yes" if s["min"] >= 0.95 * ISSUE_RATE else "no"
                lines.append(f"| {parts:,} | records/s achieved | {cell(s)} | ≥ {0.95 * ISSUE_RATE:,.0f} (95 % of the rate) | {ok} |")
        for parts, metric, name, limit in ISSUE_TARGETS:
            s = stats([r.get(metric) for r in rows.get((parts,), {}).get("skiff-local", [])])
            if s:
                ok = "yes" if s["max"] <= limit else "no"
                lines.append(f"| {parts:,} | {name} | {cell(s)} | ≤ {limit} | {ok} |")
        profiles = {(r.get("rate"), r.get("size")) for r in self.runs if r.get("kind") == "sweep" and r.get("rate")}
        if lines and profiles != {(ISSUE_RATE, 1024)}:
            lines.append(f"| | profile | {', '.join(f'{r:,}/s × {z} B' for r, z in sorted(profiles))} | "
                         f"{ISSUE_RATE:,}/s × 1024 B | no: not the issue's profile |")
        if lines:
            self.md += ["## Issue #18 targets (`skiff dev`, local directory)", "",
                        f"Met = the worst repetition within the target. RSS budget: {RSS_BUDGET_MIB} MiB (tail cache "
                        "256 + block cache 256 + write buffer 64 + 128). Valid only when the rate is 10,000 records/s "
                        "of 1 KiB and the machine was otherwise idle.", "",
                        "| partitions | metric | measured | target | met |", "|---|---|---|---|---|"] + lines + [""]

    def plots(self):
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            import matplotlib.ticker
        except ImportError:
            self.md += ["(matplotlib missing: no plots)", ""]
            return []
        made = []
        for fname, title, panels, logy in [
            ("latency.png", "Produce latency vs partitions (fixed rate, acks=all, all records of the measured run)",
             [("p50_ms", "p50 (ms)"), ("p99_ms", "p99 (ms)"), ("max_ms", "max (ms)")], True),
            ("rss.png", "Broker memory and CPU vs partitions",
             [("vm_hwm_mib", "peak RSS, VmHWM (MiB)"), ("rss_max_mib", "RSS max during run (MiB)"),
              ("cpu_pct", "broker CPU during run (%)")], False),
        ]:
            if not any(self.series("sweep", "partitions", y) for y, _ in panels):
                continue  # every point failed: nothing to draw
            fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
            for ax, (y, ylabel) in zip(axes, panels):
                ticks = set()
                for t, (xs, ys) in self.series("sweep", "partitions", y).items():
                    ax.plot(xs, ys, marker="o", label=LABEL[t], color=COLORS[t])
                    ticks.update(xs)
                if y.startswith("vm_hwm") or y.startswith("rss"):
                    ax.axhline(RSS_BUDGET_MIB, color="gray", linestyle="--", linewidth=0.8, label="Skiff budget (issue #18)")
                ax.set_xscale("log")
                ax.set_xticks(sorted(ticks), [f"{x:,}" for x in sorted(ticks)])  # the swept counts, not powers of 10
                ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
                if logy:
                    ax.set_yscale("log")
                ax.set_xlabel("partitions")
                ax.set_ylabel(ylabel)
                ax.grid(True, which="both", alpha=0.3)
            axes[0].legend(fontsize=8)
            fig.suptitle(title, fontsize=10)
            fig.tight_layout()
            fig.savefig(os.path.join(self.d, fname), dpi=110)
            plt.close(fig)
            made.append(fname)
        return made

    def build(self):
        env = ""
        p = os.path.join(self.d, "environment.txt")
        if os.path.exists(p):
            with open(p) as f:
                env = f.read()
        self.md += [f"# Partition sweep — {os.path.basename(os.path.normpath(self.d))}", "",
                    "Produced by `bench/partitions.sh`; method and caveats in `bench/README.md`. One producer "
                    "(Kafka's ProducerPerformance, acks=all, keys round-robin over max(4096, 10 × partitions)) at a "
                    "fixed rate against a freshly started broker per point; targets run one after the other.", "",
                    "```", env.strip(), "```", ""]
        self.summary()
        self.issue_targets()
        self.md += ["## Skiff ÷ Kafka", ""]
        K = ["partitions"]
        for metric, name in [("records_per_s", "Achieved records/s"), ("p50_ms", "Produce p50 (ms)"),
                             ("p99_ms", "Produce p99 (ms)"), ("p999_ms", "Produce p99.9 (ms)"),
                             ("max_ms", "Produce max (ms)"), ("steady_p99_ms", "Produce p99, steady state (ms)"),
                             ("steady_max_ms", "Produce max, steady state (ms)"),
                             ("vm_hwm_mib", "Broker peak RSS, VmHWM (MiB)"), ("rss_max_mib", "Broker RSS max during the run (MiB)"),
                             ("cpu_pct", "Broker CPU during the run (%)"), ("cpu_s_per_gb", "Broker CPU s per GB"),
                             ("create_s", "Topic creation (s: CreateTopics of up to 5,000 partitions, then CreatePartitions in steps of 5,000; incl. the tools' JVM starts)"),
                             ("data_dir_mib", "Data directory after the run (MiB)"),
                             ("flush_commit_avg_ms", "Skiff flush→commit, average (ms)"),
                             ("load1", "Machine load average (1 min) at the end of the run")]:
            self.table(name, "sweep", K, metric)
        for png in self.plots():
            self.md += [f"![{png}]({png})", ""]
        bad = [r for r in self.runs if r.get("kind") == "sweep" and (r.get("complete") is False or r.get("warmup_timed_out"))]
        if bad:
            self.md += ["## Incomplete runs", "", "Stopped by a timeout or missing output (the measured run's "
                        "throughput then comes from interval lines, without percentiles):", ""]
            self.md += [f"- {r['target']} {r['partitions']} partitions rep {r.get('rep')}: "
                        f"{'warm-up timed out; ' if r.get('warmup_timed_out') else ''}"
                        f"{r['error'] + ' (see raw/); ' if r.get('error') else ''}"
                        f"{'measured run incomplete' if r.get('complete') is False else 'measured run complete'}"
                        for r in bad] + [""]
        with open(os.path.join(self.d, "results.md"), "w") as f:
            f.write("\n".join(self.md))
        with open(os.path.join(self.d, "results.json"), "w") as f:
            json.dump({"environment": env, "rss_budget_mib": RSS_BUDGET_MIB, "aggregates": self.agg, "runs": self.runs}, f, indent=1)


if __name__ == "__main__":
    SweepReport(sys.argv[1]).build()
    print(os.path.join(sys.argv[1], "results.md"))
