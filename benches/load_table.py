#!/usr/bin/env python3
"""Prints the README's load table (Markdown) from the CSV benches/load.sh writes.

    python3 benches/load_table.py benches/load.csv
"""

import csv
import statistics
import sys
from collections import defaultdict

runs = defaultdict(list)
for row in csv.DictReader(open(sys.argv[1] if len(sys.argv) > 1 else "benches/load.csv")):
    runs[(row["label"], row["mode"])].append(
        (float(row["requests_per_sec"]), float(row["server_cpu_us_per_request"]))
    )
med = {k: (statistics.median(r for r, _ in v), statistics.median(c for _, c in v)) for k, v in runs.items()}
names = {"64": "64 B", "1k": "1 KiB", "16k": "16 KiB", "1m": "1 MiB", "16m": "16 MiB"}

print("| body | plain req/s | tower-etag req/s (× plain) | naive req/s (× plain) | server CPU µs/req: plain / tower-etag / naive |")
print("|---|---:|---:|---:|---|")
for size, name in names.items():
    for suffix, kind in (("", ""), ("-multi", ", streamed")):
        label = size + suffix
        if (label, "plain") not in med:
            continue
        p, e, n = med[(label, "plain")], med[(label, "etag")], med[(label, "naive")]
        print(
            f"| {name}{kind} | {p[0]:,.0f} | {e[0]:,.0f} ({e[0] / p[0]:.2f}) | {n[0]:,.0f} ({n[0] / p[0]:.2f}) "
            f"| {p[1]:.1f} / {e[1]:.1f} / {n[1]:.1f} |"
        )
for size in ("1k", "1m"):
    if (size, "etag_304") in med:
        e, t = med[(size, "etag")], med[(size, "etag_304")]
        print(f"| {names[size]}, revalidated (304) | | {t[0]:,.0f} ({t[0] / e[0]:.2f} × its 200) | | {t[1]:.1f} |")
for label, name in (("post", "POST"), ("missing", "GET → 404"), ("over-cap", "GET, Content-Length over the cap")):
    if (label, "plain") in med:
        p, e = med[(label, "plain")], med[(label, "etag")]
        print(f"| {name} (untouched) | {p[0]:,.0f} | {e[0]:,.0f} ({e[0] / p[0]:.2f}) | | {p[1]:.1f} / {e[1]:.1f} |")
