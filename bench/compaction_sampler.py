#!/usr/bin/env python3
"""Samples Skiff's /metrics once a second for SECONDS and prints one JSON line per committed
cleaner pass of TOPIC (the `skiff_cleaner_last_pass_*` gauges read right after
`skiff_cleaner_passes_total{result="committed"}` moved). Used by bench/compaction.sh.

usage: compaction_sampler.py METRICS_URL TOPIC SECONDS
"""
import json
import re
import sys
import time
import urllib.request

LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$')


def scrape(url):
    out = {}
    with urllib.request.urlopen(url, timeout=5) as r:
        for line in r.read().decode().splitlines():
            m = LINE.match(line)
            if m:
                out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def main():
    url, topic, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    label = '{topic="%s"}' % topic
    committed = ("skiff_cleaner_passes_total", '{result="committed"}')
    seen = 0.0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            m = scrape(url)
        except OSError as e:
            print(f"scrape failed: {e}", file=sys.stderr)
            time.sleep(1)
            continue
        n = m.get(committed, 0.0)
        if n > seen:
            row = {"at": time.time(), "passes_committed": n, "passes_between_samples": n - seen}
            for k in ("read_bytes", "written_bytes", "cleanable_bytes", "gets", "puts"):
                row[k] = m.get((f"skiff_cleaner_last_pass_{k}", label), 0.0)
            row["records_removed_total"] = m.get(("skiff_cleaner_records_removed_total", label), 0.0)
            for result in ("rejected", "abandoned", "failed"):
                row[result] = m.get(("skiff_cleaner_passes_total", '{result="%s"}' % result), 0.0)
            print(json.dumps(row), flush=True)
            seen = n
        time.sleep(1)


if __name__ == "__main__":
    main()
