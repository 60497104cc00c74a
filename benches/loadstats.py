"""Reads the CSV that benches/load.sh writes; shared by load_table.py and chart.py.

Ratios are paired: each repetition of load.sh runs every mode of a label one
after the other, so a mode's ratio to plain is taken within each repetition
and the median of those ratios is reported, with their range. The machine's
speed drifts between repetitions more than it does within one; pairing keeps
that drift out of the ratios.
"""

import csv
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

    def ratio(self, label, mode, base="plain", base_label=None):
        """Requests/s of `mode` over `base`, paired by repetition: (median, low, high)."""
        a = self.runs[(label, mode)]
        b = self.runs[(base_label or label, base)]
        ratios = sorted(a[rep][0] / b[rep][0] for rep in a if rep in b)
        if not ratios:
            return None
        return statistics.median(ratios), ratios[0], ratios[-1]

    def cpu_delta(self, label, mode, base="plain"):
        """Server CPU µs per request of `mode` minus `base`, paired: (median, low, high)."""
        a, b = self.runs[(label, mode)], self.runs[(label, base)]
        deltas = sorted(a[rep][1] - b[rep][1] for rep in a if rep in b)
        if not deltas:
            return None
        return statistics.median(deltas), deltas[0], deltas[-1]
