"""Parsers for Kafka tool output, /proc and Prometheus text. Pure functions, no I/O except /proc."""
import json
import os
import re

CLK_TCK = os.sysconf("SC_CLK_TCK")

# ProducerPerformance final line, e.g.
# "100000 records sent, 53248.1 records/sec (52.00 MB/sec), 345.67 ms avg latency, 700.00 ms max latency,
#  345 ms 50th, 650 ms 95th, 690 ms 99th, 699 ms 99.9th."
_PP_FINAL = re.compile(
    r"(\d+)( steady state)? records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
    r"([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99\.9th")
# Interval line (no percentiles): "12345 records sent, 2469.0 records/sec (2.41 MB/sec), 5.1 ms avg latency, 40.0 ms max latency."
_PP_INTERVAL = re.compile(
    r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, ([\d.]+) ms max latency\.$")


def producer_perf(text):
    """Final summary of ProducerPerformance, or None. MB/sec is MiB/s (the tool divides by 1024*1024).
    With --warmup-records the tool prints a second "N steady state records sent, ..." line; its
    percentiles are returned as steady_p50_ms etc. (the first line covers all records)."""
    out = None
    for line in text.splitlines():
        m = _PP_FINAL.search(line)
        if not m:
            continue
        g = m.groups()
        if g[1]:  # steady state
            if out:
                out.update(steady_records=int(g[0]), steady_avg_ms=float(g[4]), steady_max_ms=float(g[5]),
                           steady_p50_ms=float(g[6]), steady_p99_ms=float(g[8]), steady_p999_ms=float(g[9]))
            continue
        out = {"records": int(g[0]), "records_per_s": float(g[2]), "mb_per_s": float(g[3]),
               "avg_ms": float(g[4]), "max_ms": float(g[5]), "p50_ms": float(g[6]), "p95_ms": float(g[7]),
               "p99_ms": float(g[8]), "p999_ms": float(g[9]), "complete": True}
    return out


def producer_perf_intervals(text):
    """Interval lines of ProducerPerformance: fallback when a run was stopped by its timeout."""
    out = []
    for line in text.splitlines():
        m = _PP_INTERVAL.search(line.strip())
        if m:
            g = m.groups()
            out.append({"records": int(g[0]), "records_per_s": float(g[1]), "mb_per_s": float(g[2]),
                        "avg_ms": float(g[3]), "max_ms": float(g[4])})
    return out


def producer_perf_partial(text):
    """Summary from interval lines only (no percentiles), marked complete=False."""
    iv = producer_perf_intervals(text)
    if not iv:
        return None
    n = sum(i["records"] for i in iv)
    secs = sum(i["records"] / i["records_per_s"] for i in iv if i["records_per_s"] > 0) or 1.0
    mb = sum(i["records"] / i["records_per_s"] * i["mb_per_s"] for i in iv if i["records_per_s"] > 0)
    return {"records": n, "records_per_s": n / secs, "mb_per_s": mb / secs,
            "avg_ms": sum(i["avg_ms"] * i["records"] for i in iv) / max(n, 1),
            "max_ms": max(i["max_ms"] for i in iv), "p50_ms": None, "p95_ms": None, "p99_ms": None,
            "p999_ms": None, "complete": False}


_E2E = re.compile(r"Percentiles: 50th = (\d+), 99th = (\d+), 99\.9th = (\d+)")
_E2E_AVG = re.compile(r"Avg latency: ([\d.]+) ms")


def end_to_end(text):
    m = _E2E.search(text)
    if not m:
        return None
    a = _E2E_AVG.search(text)
    return {"avg_ms": float(a.group(1)) if a else None, "p50_ms": float(m.group(1)),
            "p99_ms": float(m.group(2)), "p999_ms": float(m.group(3))}


def last_json_line(text):
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                pass
    return None


def proc_cpu_seconds(pid):
    """utime + stime of a process (all threads), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14, 15 of proc(5)


def proc_status_kib(pid, key):
    """A 'kB' field of /proc/PID/status (VmRSS, VmHWM), in KiB; None if gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


_PROM = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eEinfNa]+)")


def prometheus(text):
    """{'name{labels}': value} for every sample line."""
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = _PROM.match(line)
        if m:
            try:
                out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
            except ValueError:
                pass
    return out


def prom_sum(samples, name, **labels):
    """Sum of samples of metric NAME whose labels include LABELS."""
    total = 0.0
    for k, v in samples.items():
        base, _, rest = k.partition("{")
        if base != name:
            continue
        if all(f'{lk}="{lv}"' in rest for lk, lv in labels.items()):
            total += v
    return total


_DD = re.compile(r"(\d+) bytes .* copied, ([\d.]+) s")


def dd_output(text):
    m = _DD.search(text)
    if not m:
        return None
    b, s = int(m.group(1)), float(m.group(2))
    return {"bytes": b, "seconds": s, "mb_per_s": b / 1048576 / s}
