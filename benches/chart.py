#!/usr/bin/env python3
"""Draws benches/load.svg from the CSV that benches/load.sh writes.

    python3 benches/chart.py benches/load.csv benches/load.svg "machine description"

Requests per second relative to the plain server (medians of the paired
per-repetition ratios, see loadstats.py)
against body size, for tower-etag and the naive from_fn baseline; solid lines
for one-chunk bodies, dashed for streamed ones; the 304 of a tagged response
as points. Standard library only.
"""

import math
import sys

from loadstats import Runs

SIZES = [("64", 64), ("1k", 1024), ("16k", 16 * 1024), ("1m", 1 << 20), ("16m", 16 << 20)]
SIZE_NAMES = {"64": "64 B", "1k": "1 KiB", "16k": "16 KiB", "1m": "1 MiB", "16m": "16 MiB"}
MODES = [("etag", "tower-etag", "#2563eb"), ("naive", "naive from_fn", "#dc2626")]


def main():
    source, target = sys.argv[1], sys.argv[2]
    machine = sys.argv[3] if len(sys.argv) > 3 else ""
    runs = Runs(source)
    ratio = {
        (label, mode): runs.ratio(label, mode)[0]
        for label in runs.labels()
        for mode in ("etag", "naive", "etag_304")
        if runs.has(label, mode) and runs.has(label, "plain")
    }

    width, height = 800, 440
    left, right, top, bottom = 70, 230, 50, 60
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for (label, _), v in ratio.items() if label.split("-")[0] in dict(SIZES)]
    lo = math.floor(min(values + [1.0]) * 10) / 10
    hi = math.ceil(max(values + [1.0]) * 10) / 10

    def x(i):
        return left + plot_w * i / (len(SIZES) - 1)

    def y(v):
        return top + plot_h * (1 - (v - lo) / (hi - lo))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="22" font-size="15" font-weight="bold">'
        "Requests/s relative to the same server without middleware (higher is better)</text>",
        f'<text x="{left}" y="38" fill="#555">{escape(machine)}</text>',
    ]
    tick = lo
    while tick <= hi + 1e-9:
        stroke = "#9ca3af" if abs(tick - 1.0) < 1e-9 else "#e5e7eb"
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="{stroke}"/>')
        out.append(f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:.1f}</text>')
        tick += 0.1
    for i, (name, _) in enumerate(SIZES):
        out.append(f'<line x1="{x(i):.1f}" x2="{x(i):.1f}" y1="{top}" y2="{top + plot_h}" stroke="#f3f4f6"/>')
        out.append(f'<text x="{x(i):.1f}" y="{top + plot_h + 18}" text-anchor="middle">{SIZE_NAMES[name]}</text>')
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 14}" text-anchor="middle">response body size</text>')
    out.append(
        f'<text transform="translate(20 {top + plot_h / 2}) rotate(-90)" text-anchor="middle">'
        "requests/s ÷ plain requests/s</text>"
    )
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#9ca3af"/>')

    legend_x = left + plot_w + 16
    legend_y = top + 10
    for mode, label, color in MODES:
        for suffix, dash, kind in (("", "", "one chunk"), ("-multi", ' stroke-dasharray="6 4"', "streamed")):
            points = [(x(i), y(ratio[(name + suffix, mode)])) for i, (name, _) in enumerate(SIZES) if (name + suffix, mode) in ratio]
            if not points:
                continue
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
            for px, py in points:
                out.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{color}"/>')
            out.append(f'<line x1="{legend_x}" x2="{legend_x + 24}" y1="{legend_y}" y2="{legend_y}" stroke="{color}" stroke-width="2"{dash}/>')
            out.append(f'<text x="{legend_x + 30}" y="{legend_y + 4}">{label}, {kind}</text>')
            legend_y += 18
    points = [(x(i), y(ratio[(name, "etag_304")])) for i, (name, _) in enumerate(SIZES) if (name, "etag_304") in ratio]
    for px, py in points:
        out.append(f'<rect x="{px - 4:.1f}" y="{py - 4:.1f}" width="8" height="8" fill="#16a34a"/>')
    if points:
        out.append(f'<rect x="{legend_x + 8}" y="{legend_y - 4}" width="8" height="8" fill="#16a34a"/>')
        out.append(f'<text x="{legend_x + 30}" y="{legend_y + 4}">tower-etag, 304</text>')
    out.append("</svg>")
    open(target, "w").write("\n".join(out) + "\n")


def escape(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


if __name__ == "__main__":
    main()
