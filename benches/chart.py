#!/usr/bin/env python3
"""Draws benches/load.svg from the CSV that benches/load.sh writes.

    python3 benches/chart.py benches/load.csv benches/load.svg "machine description"

Server CPU time per request (median of the runs) against body size, for the
plain server, tower-etag and the naive from_fn baseline; solid lines for
one-chunk bodies, dashed for streamed ones. Standard library only.
"""

import csv
import math
import statistics
import sys
from collections import defaultdict

SIZES = [("64", 64), ("1k", 1024), ("16k", 16 * 1024), ("1m", 1 << 20), ("16m", 16 << 20)]
SIZE_NAMES = {"64": "64 B", "1k": "1 KiB", "16k": "16 KiB", "1m": "1 MiB", "16m": "16 MiB"}
MODES = [("plain", "plain", "#6b7280"), ("etag", "tower-etag", "#2563eb"), ("naive", "naive from_fn", "#dc2626")]


def main():
    source, target = sys.argv[1], sys.argv[2]
    machine = sys.argv[3] if len(sys.argv) > 3 else ""
    runs = defaultdict(list)
    for row in csv.DictReader(open(source)):
        runs[(row["label"], row["mode"])].append(float(row["server_cpu_us_per_request"]))
    cpu = {key: statistics.median(values) for key, values in runs.items()}

    width, height = 760, 440
    left, right, top, bottom = 80, 190, 50, 60
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for v in cpu.values() if v > 0]
    lo = 10 ** math.floor(math.log10(min(values)))
    hi = 10 ** math.ceil(math.log10(max(values)))

    def x(i):
        return left + plot_w * i / (len(SIZES) - 1)

    def y(v):
        return top + plot_h * (1 - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="22" font-size="15" font-weight="bold">'
        "Server CPU per request vs body size (lower is better)</text>",
        f'<text x="{left}" y="38" fill="#555">{escape(machine)}</text>',
    ]
    decade = lo
    while decade <= hi:
        for m in (1, 2, 5):
            v = decade * m
            if lo <= v <= hi:
                out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e5e7eb"/>')
                out.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
        decade *= 10
    for i, (name, _) in enumerate(SIZES):
        out.append(f'<line x1="{x(i):.1f}" x2="{x(i):.1f}" y1="{top}" y2="{top + plot_h}" stroke="#f3f4f6"/>')
        out.append(f'<text x="{x(i):.1f}" y="{top + plot_h + 18}" text-anchor="middle">{SIZE_NAMES[name]}</text>')
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 14}" text-anchor="middle">response body size</text>')
    out.append(
        f'<text transform="translate(22 {top + plot_h / 2}) rotate(-90)" text-anchor="middle">'
        "server CPU µs per request (log)</text>"
    )
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#9ca3af"/>')

    legend_y = top + 10
    for mode, label, color in MODES:
        for suffix, dash, kind in (("", "", "one chunk"), ("-multi", ' stroke-dasharray="6 4"', "streamed")):
            points = [(x(i), y(cpu[(name + suffix, mode)])) for i, (name, _) in enumerate(SIZES) if (name + suffix, mode) in cpu]
            if not points:
                continue
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
            for px, py in points:
                out.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{color}"/>')
            lx = left + plot_w + 16
            out.append(f'<line x1="{lx}" x2="{lx + 24}" y1="{legend_y}" y2="{legend_y}" stroke="{color}" stroke-width="2"{dash}/>')
            out.append(f'<text x="{lx + 30}" y="{legend_y + 4}">{label}, {kind}</text>')
            legend_y += 18
    out.append("</svg>")
    open(target, "w").write("\n".join(out) + "\n")


def escape(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


if __name__ == "__main__":
    main()
