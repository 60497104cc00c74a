#!/usr/bin/env python3
"""Summarises the CSV benches/frames.sh writes.

    python3 benches/frames_table.py benches/frames.csv FLOORS [--markdown] [--compact]

FLOORS holds `floor,SIZE,MICROSECONDS` lines (the load server's
`--blake3-floor`). For every shape: requests/s plain, tower-etag's
efficiency = (plain CPU + one-call BLAKE3 of the body) / tower-etag CPU, and
tower-etag's requests/s against the baseline commit's (`base`) and the naive
middleware's, and, where the run revalidated the shape (`etag304`,
`base304`: the request carries the body's tag, so the handler runs, the
body is hashed and a 304 is sent), the 304's requests/s against the plain
200's, each the median of per-repetition ratios with their range. For
`file-*` rows (ServeDir's own ETag, which the layer keeps without hashing)
the floor is zero. `--compact` (with `--markdown`: the README's table) puts
the fresh and shared shapes of one body and frame size in one row, as
`fresh / shared` medians, without the ranges.
"""

import csv
import statistics
import sys
from collections import defaultdict


def main():
    rows = list(csv.DictReader(open(sys.argv[1])))
    floors = {}
    for line in open(sys.argv[2]):
        parts = line.strip().split(",")
        if len(parts) == 3 and parts[0] == "floor":
            floors[parts[1]] = float(parts[2])
    markdown = "--markdown" in sys.argv
    runs = defaultdict(dict)  # (shape, rep) -> mode -> (rps, cpu)
    shapes = []
    for row in rows:
        key = (row["shape"], row["rep"])
        runs[key][row["mode"]] = (float(row["requests_per_sec"]), float(row["server_cpu_us_per_request"]))
        if row["shape"] not in shapes:
            shapes.append(row["shape"])

    def body_of(shape):
        return shape.split("/")[0] if "/" in shape else shape.split("-", 1)[1]

    def per_rep(shape, f):
        values = []
        for (s, _), modes in runs.items():
            if s == shape:
                try:
                    values.append(f(modes))
                except KeyError:
                    pass
        return values

    def fmt(values, digits=2):
        if not values:
            return "–"
        med = statistics.median(values)
        if markdown or len(values) == 1:
            return f"{med:.{digits}f}"
        return f"{med:.{digits}f} [{min(values):.{digits}f}–{max(values):.{digits}f}]"

    revalidated = any(row["mode"] == "etag304" for row in rows)
    if "--compact" in sys.argv:
        compact(shapes, floors, body_of, per_rep, revalidated)
        return
    header = ["shape", "plain req/s", "plain µs", "tower-etag µs", "efficiency", "× baseline", "× naive"]
    if revalidated:
        header += ["304 × plain", "baseline 304 × plain"]
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|---|" + "---:|" * (len(header) - 1))
    else:
        print("  ".join(f"{h:>16}" if i else f"{h:<20}" for i, h in enumerate(header)))
    worst = []
    for shape in shapes:
        floor = 0.0 if shape.startswith("file-") else floors.get(body_of(shape), 0.0)
        plain_rps = per_rep(shape, lambda m: m["plain"][0])
        plain_cpu = per_rep(shape, lambda m: m["plain"][1])
        etag_cpu = per_rep(shape, lambda m: m["etag"][1])
        eff = per_rep(shape, lambda m: (m["plain"][1] + floor) / m["etag"][1])
        vs_base = per_rep(shape, lambda m: m["etag"][0] / m["base"][0])
        vs_naive = per_rep(shape, lambda m: m["etag"][0] / m["naive"][0])
        if eff:
            worst.append((statistics.median(eff), shape))
        cells = [shape, fmt(plain_rps, 0), fmt(plain_cpu, 0), fmt(etag_cpu, 0), fmt(eff), fmt(vs_base), fmt(vs_naive)]
        if revalidated:
            cells.append(fmt(per_rep(shape, lambda m: m["etag304"][0] / m["plain"][0])))
            cells.append(fmt(per_rep(shape, lambda m: m["base304"][0] / m["plain"][0])))
        if markdown:
            print("| " + " | ".join(cells) + " |")
        else:
            print("  ".join(f"{c:>16}" if i else f"{c:<20}" for i, c in enumerate(cells)))
    if worst and not markdown:
        worst.sort()
        print(f"lowest efficiency: {worst[0][0]:.2f} ({worst[0][1]})")


def compact(shapes, floors, body_of, per_rep, revalidated):
    """One markdown row per body and frame size: `fresh / shared` medians."""

    def med(values, digits=2):
        return f"{statistics.median(values):.{digits}f}" if values else "–"

    def columns(shape):
        floor = 0.0 if shape.startswith("file-") else floors.get(body_of(shape), 0.0)
        return [
            med(per_rep(shape, lambda m: (m["plain"][1] + floor) / m["etag"][1])),
            med(per_rep(shape, lambda m: m["etag"][0] / m["base"][0])),
            med(per_rep(shape, lambda m: m["etag"][0] / m["naive"][0])),
            med(per_rep(shape, lambda m: m["etag304"][0] / m["plain"][0])),
        ]

    header = ["body, frames", "efficiency", "× baseline (req/s)", "× naive (req/s)"]
    if revalidated:
        header.append("304 × plain 200")
    print("| " + " | ".join(header) + " |")
    print("|---|" + "---:|" * (len(header) - 1))
    done = set()
    for shape in shapes:
        if shape in done:
            continue
        if shape.endswith("/fresh") or shape.endswith("/shared"):
            stem = shape.rsplit("/", 1)[0]
            pair = [f"{stem}/fresh", f"{stem}/shared"]
            done.update(pair)
            cells = [columns(s) if s in shapes else ["–"] * 4 for s in pair]
            label = stem.replace("/", " in ", 1).replace("whole", "one frame")
            row = [label] + ["–" if a == b == "–" else f"{a} / {b}" for a, b in zip(*cells)]
        else:
            done.add(shape)
            label = {"file": "ServeDir, its own ETag", "hashed": "ServeDir, hashed"}[shape.split("-")[0]]
            row = [f"{label}, {shape.split('-')[1]}"] + columns(shape)
        if not revalidated:
            row = row[:4]
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
