#!/usr/bin/env python3
"""Prints the medians of the last `cargo bench --bench etag` run as a Markdown
table, with the layer's cost over the plain router and the hash floor.

    cargo bench --bench etag && python3 benches/table.py
"""

import sys

from loadstats import criterion_medians

root = sys.argv[1] if len(sys.argv) > 1 else "target/criterion"
columns = ["plain", "noop_layer", "etag_skipped", "etag_200", "etag_304", "naive_200", "blake3_floor", "blake3_frames"]
groups = criterion_medians(root)

def fmt(ns):
    return f"{ns / 1000:.2f} µs" if ns < 1e6 else f"{ns / 1e6:.2f} ms"


def order(group):
    sizes = ["64B", "1KiB", "16KiB", "1MiB", "16MiB"]
    parts = group.split("/")
    return (parts[0], sizes.index(parts[1]) if len(parts) > 1 and parts[1] in sizes else 0, group)


response = [g for g in groups if g.startswith("response/")]
print("| body | " + " | ".join(columns) + " | etag_200 − plain − floor | naive_200 / etag_200 |")
print("|---" * (len(columns) + 3) + "|")
for group in sorted(response, key=order):
    row = groups[group]
    cells = [fmt(row[c]) if c in row else "" for c in columns]
    extra = ""
    if all(c in row for c in ("plain", "etag_200", "blake3_floor", "naive_200")):
        extra = f" {fmt(row['etag_200'] - row['plain'] - row['blake3_floor'])} | {row['naive_200'] / row['etag_200']:.2f}"
    print(f"| {group.removeprefix('response/')} | " + " | ".join(cells) + f" |{extra} |")
for group in sorted(g for g in groups if not g.startswith("response/")):
    print()
    print(f"| {group} | median |")
    print("|---|---|")
    for name, ns in sorted(groups[group].items(), key=lambda kv: kv[1]):
        print(f"| {name} | {fmt(ns)} |")
