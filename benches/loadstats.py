"""Reads what the benches write, for the scripts beside it: the CSV of
benches/load.sh (load_table.py, chart.py), criterion's results (table.py,
load_table.py), and the wrk rows of cache_load.sh and redis_load.sh.

Ratios are paired: each repetition of load.sh runs every mode of a label one
after the other, so a mode's ratio to plain is taken within each repetition
and the median of those ratios is reported, with their range. The machine's
speed drifts between repetitions more than it does within one; pairing keeps
that drift out of the ratios.
"""

import csv
import glob
import json
import os
import statistics
from collections import defaultdict


class Runs:
    def __init__(self, path):
        # (label, mode) -> {rep: (requests/s, server CPU µs per request)}
        self.runs = defaultdict(dict)
        for row in csv.DictReader(open(path)):
            key = (row["label"], row["mode"])
            # Without a rep column, the n-th run of a label and mode is taken
            # as repetition n.
            rep = row.get("rep") or str(len(self.runs[key]) + 1)
            self.runs[key][rep] = (
                float(row["requests_per_sec"]),
                float(row["server_cpu_us_per_request"]),
            )

    def labels(self):
        return list(dict.fromkeys(label for label, _ in self.runs))

    def has(self, label, mode):
        return (label, mode) in self.runs

    def rps(self, label, mode):
        """Median requests/s."""
        return statistics.median(r for r, _ in self.runs[(label, mode)].values())

    def cpu(self, label, mode):
        """Median server CPU µs per request."""
        return statistics.median(c for _, c in self.runs[(label, mode)].values())

    def ratio(self, label, mode, base="plain"):
        """Requests/s of `mode` over `base`, paired by repetition: (median, low, high)."""
        return self._paired(label, mode, base, lambda run, base_run: run[0] / base_run[0])

    def cpu_delta(self, label, mode, base="plain"):
        """Server CPU µs per request of `mode` minus `base`, paired: (median, low, high)."""
        return self._paired(label, mode, base, lambda run, base_run: run[1] - base_run[1])

    def _paired(self, label, mode, base, compare):
        a, b = self.runs[(label, mode)], self.runs[(label, base)]
        values = sorted(compare(a[rep], b[rep]) for rep in a if rep in b)
        if not values:
            return None
        return statistics.median(values), values[0], values[-1]


def criterion_medians(root):
    """Criterion's medians in ns under `root` (its output directory), as
    {group: {function (and value, if any): median}}."""
    groups = {}
    for path in glob.glob(os.path.join(root, "**", "new", "benchmark.json"), recursive=True):
        meta = json.load(open(path))
        estimates = json.load(open(os.path.join(os.path.dirname(path), "estimates.json")))
        name = meta["function_id"] + (f" {meta['value_str']}" if meta.get("value_str") else "")
        groups.setdefault(meta["group_id"], {})[name] = estimates["median"]["point_estimate"]
    return groups


class WrkRows:
    """The rows benches/support/wrk_row.awk writes (label, repetition,
    requests/s, server CPU µs per request, p50 µs, p99 µs, requests), as
    benches/cache_load.sh and benches/redis_load.sh collect them."""

    def __init__(self, path):
        self.runs = defaultdict(dict)
        for line in open(path):
            label, rep, rps, cpu, p50, p99, _ = line.strip().split(",")
            self.runs[label][rep] = (float(rps), float(cpu), float(p50), float(p99))

    def median(self, label, i):
        return statistics.median(v[i] for v in self.runs[label].values())

    def ratio(self, a, b):
        """Requests/s of `a` over `b`, paired by repetition: median (range)."""
        values = sorted(self.runs[a][r][0] / self.runs[b][r][0] for r in self.runs[a] if r in self.runs[b])
        return f"{statistics.median(values):.2f}× ({values[0]:.2f}–{values[-1]:.2f})"

    def print_table(self, totals_only=()):
        """Medians per label; for labels in `totals_only` (several wrk at
        once), requests/s only."""
        width = max(len(label) for label in self.runs) + 2
        print()
        print(f"{'run':<{width}} {'req/s':>10} {'cpu µs/req':>11} {'p50 µs':>8} {'p99 µs':>8}")
        for label in self.runs:
            if label in totals_only:
                print(f"{label:<{width}} {self.median(label, 0):>10,.0f} {'-':>11} {'-':>8} {'-':>8}")
                continue
            print(
                f"{label:<{width}} {self.median(label, 0):>10,.0f} {self.median(label, 1):>11.2f} "
                f"{self.median(label, 2):>8,.0f} {self.median(label, 3):>8,.0f}"
            )
