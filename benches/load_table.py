#!/usr/bin/env python3
"""Summarises the CSV benches/load.sh writes.

    python3 benches/load_table.py [benches/load.csv [CRITERION_DIR]]
        the README's table (Markdown), with the efficiency column when
        CRITERION_DIR holds criterion's `blake3_floor` results
    python3 benches/load_table.py --text benches/load.csv [CRITERION_DIR]
        the summary load.sh prints: every label and mode, then the figures the
        README's performance section states, with the BLAKE3 floor read from
        criterion's `blake3_floor` results in CRITERION_DIR when given

Ratios are medians of per-repetition ratios (see loadstats.py), with their
range in brackets in the text summary.
"""

import sys

from loadstats import Runs, criterion_medians

NAMES = {"64": "64 B", "1k": "1 KiB", "16k": "16 KiB", "1m": "1 MiB", "16m": "16 MiB"}
CRITERION = {"64": "64B", "1k": "1KiB", "16k": "16KiB", "1m": "1MiB", "16m": "16MiB"}
UNTOUCHED = (("post", "POST"), ("missing", "GET → 404"), ("over-cap", "GET, Content-Length over the cap"))


def markdown(runs, criterion_dir=None):
    floor = floors(criterion_dir) if criterion_dir else {}

    def cell(label, mode):
        if not runs.has(label, mode):
            return ""
        return f"{runs.rps(label, mode):,.0f} ({runs.ratio(label, mode)[0]:.2f})"

    print(
        "| body | plain req/s | tower-etag req/s (× plain) | naive req/s (× plain) "
        "| do-nothing layer req/s (× plain) | server CPU µs/req: plain / tower-etag / naive "
        "| efficiency |"
    )
    print("|---|---:|---:|---:|---:|---|---:|")
    for size, name in NAMES.items():
        for suffix, kind in (("", ""), ("-multi", ", streamed")):
            label = size + suffix
            if not runs.has(label, "plain"):
                continue
            cpus = " / ".join(f"{runs.cpu(label, m):.1f}" for m in ("plain", "etag", "naive"))
            value = efficiency(runs, label, floor)
            print(
                f"| {name}{kind} | {runs.rps(label, 'plain'):,.0f} | {cell(label, 'etag')} "
                f"| {cell(label, 'naive')} | {cell(label, 'noop')} | {cpus} "
                f"| {'' if value is None else f'{value:.2f}'} |"
            )
    for size in ("1k", "1m"):
        if runs.has(size, "etag_304"):
            ratio = runs.ratio(size, "etag_304", base="etag")[0]
            print(
                f"| {NAMES[size]}, revalidated (304) | | {runs.rps(size, 'etag_304'):,.0f} "
                f"({ratio:.2f} × its 200) | | | {runs.cpu(size, 'etag_304'):.1f} | |"
            )
    for label, name in UNTOUCHED:
        if runs.has(label, "plain"):
            print(
                f"| {name} (untouched) | {runs.rps(label, 'plain'):,.0f} | {cell(label, 'etag')} | "
                f"| {cell(label, 'noop')} | {runs.cpu(label, 'plain'):.1f} / {runs.cpu(label, 'etag'):.1f} | |"
            )


def floors(root, group="single", function="blake3_floor"):
    """Criterion's median of one floor per load label, in µs: `blake3::hash`
    in one call by default, or (`"multi", "blake3_frames"`) the streamed
    body's frames fed to `blake3::Hasher` one by one."""
    medians = criterion_medians(root)
    return {
        label: medians[f"response/{name}/{group}"][function] / 1000
        for label, name in CRITERION.items()
        if function in medians.get(f"response/{name}/{group}", {})
    }


def text(runs, criterion_dir):
    def fmt(triple, digits=3):
        value, low, high = triple
        return f"{value:.{digits}f} [{low:.{digits}f}–{high:.{digits}f}]"

    print(f"{'label':<10} {'mode':<9} {'req/s':>10} {'× plain, paired [range]':>25} {'cpu µs/req':>11} {'Δ cpu µs':>9}")
    for label in runs.labels():
        for mode in ("plain", "noop", "etag", "etag_304", "naive"):
            if not runs.has(label, mode):
                continue
            line = f"{label:<10} {mode:<9} {runs.rps(label, mode):>10.0f}"
            if mode != "plain" and runs.has(label, "plain"):
                line += f" {fmt(runs.ratio(label, mode)):>25} {runs.cpu(label, mode):>11.2f}"
                line += f" {runs.cpu_delta(label, mode)[0]:>+9.2f}"
            else:
                line += f" {'':>25} {runs.cpu(label, mode):>11.2f}"
            print(line)

    print()
    print("figures the README states (paired medians [range] over the repetitions):")
    if runs.has("1k", "etag"):
        print(f"  1 KiB tagged: {fmt(runs.ratio('1k', 'etag'))} × plain requests/s")
    if runs.has("1k", "noop"):
        print(f"  1 KiB through a do-nothing Router::layer: {fmt(runs.ratio('1k', 'noop'))} × plain")
    floor = floors(criterion_dir) if criterion_dir else {}
    frames = floors(criterion_dir, "multi", "blake3_frames") if criterion_dir else {}
    if runs.has("1k", "noop") and "1k" in floor:
        plain, noop = runs.cpu("1k", "plain"), runs.cpu("1k", "noop")
        print(
            f"  1 KiB ceiling if tagging cost nothing but the hash: plain {plain:.2f} µs ÷ "
            f"(do-nothing layer {noop:.2f} µs + blake3::hash {floor['1k']:.2f} µs) = {plain / (noop + floor['1k']):.3f}"
        )
    for label, name in UNTOUCHED:
        if runs.has(label, "etag"):
            line = f"  {name}, untouched: tower-etag {fmt(runs.ratio(label, 'etag'))}"
            if runs.has(label, "noop"):
                line += f", do-nothing layer {fmt(runs.ratio(label, 'noop'))}"
            print(line + " × plain")
    for size in ("1k", "1m"):
        if runs.has(size, "etag_304"):
            print(f"  {NAMES[size]} 304: {fmt(runs.ratio(size, 'etag_304', base='etag'))} × the requests/s of its tagged 200")
    for size in ("1m", "16m"):
        for suffix in ("", "-multi"):
            label = size + suffix
            if not runs.has(label, "etag"):
                continue
            delta = runs.cpu_delta(label, "etag")
            line = f"  {label}: server CPU +{delta[0]:.0f} µs/req over plain [{delta[1]:.0f}–{delta[2]:.0f}]"
            if size in floor:
                budget = 1.05 * floor[size]
                line += f"; 1.05 × blake3::hash ({floor[size]:.0f} µs) = {budget:.0f} µs; ratio {delta[0] / budget:.2f}"
            if suffix and size in frames:
                line += f"; × blake3 of its frames ({frames[size]:.0f} µs): {delta[0] / frames[size]:.2f}"
            print(line)
    for label in runs.labels():
        if runs.has(label, "etag") and runs.has(label, "naive"):
            print(f"  {label}: tower-etag / naive requests/s {fmt(runs.ratio(label, 'etag', base='naive'))}")
    if floor:
        print()
        print("efficiency = (plain CPU + blake3::hash of the body in one call) / tower-etag CPU, per request:")
        print(f"  {'body':<10} {'plain µs':>9} {'floor µs':>9} {'etag µs':>9} {'efficiency':>11}")
        for label in runs.labels():
            value = efficiency(runs, label, floor)
            if value is not None:
                size = label.split("-")[0]
                print(
                    f"  {label:<10} {runs.cpu(label, 'plain'):>9.2f} {floor[size]:>9.2f} "
                    f"{runs.cpu(label, 'etag'):>9.2f} {value:>11.3f}"
                )


def efficiency(runs, label, floor):
    """(plain CPU + the one-call BLAKE3 floor of the body) / tower-etag CPU:
    1.0 when tagging costs exactly the hash of the body."""
    size = label.split("-")[0]
    if size not in floor or not (runs.has(label, "plain") and runs.has(label, "etag")):
        return None
    return (runs.cpu(label, "plain") + floor[size]) / runs.cpu(label, "etag")


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--text":
        text(Runs(args[1]), args[2] if len(args) > 2 else None)
    else:
        markdown(Runs(args[0] if args else "benches/load.csv"), args[1] if len(args) > 1 else None)
