#!/usr/bin/env bash
# Instructions the server executes per request, counted by callgrind: plain,
# tower-etag and the naive from_fn baseline on the same load server.
#
#   bash benches/instructions.sh
#   PARTS=cache bash benches/instructions.sh   # one table: tag, untouched, cache
#   PARTS=cache FEATURES=metrics bash benches/instructions.sh   # with metrics recorded
#
# Unlike wall-clock figures, these counts repeat to within a fraction of a
# percent on a busy machine, so they resolve sub-microsecond differences that
# benches/load.sh cannot. They count user space only (the kernel's share of
# sending the bytes is not in them), and valgrind runs BLAKE3 with AVX2 at
# most, never AVX-512, so hashing counts more instructions than it executes
# natively.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install valgrind" >&2; exit 1; }
# FEATURES=metrics: the caches count their metrics into a recorder.
cargo build --release --example load_server --quiet ${FEATURES:+--features "$FEATURES"}
target_dir=$(cargo metadata --no-deps --format-version 1 | grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)

work=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" \
    "$target_dir/release/examples/load_server" "127.0.0.1:$port" >"$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 300); do grep -q listening "$work/server.log" && break; sleep 0.1; done

python3 - "$port" "$server" "$work" "${PARTS:-tag untouched cache}" <<'PY'
import glob, http.client, os, subprocess, sys

port, pid, work, parts = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4].split()
conn = http.client.HTTPConnection("127.0.0.1", port)


def request(method, path, headers=None):
    conn.request(method, path, headers=headers or {})
    response = conn.getresponse()
    response.read()
    return response


def count(method, path, n, headers=None):
    for _ in range(3):  # warm up: content built, connection and caches ready
        request(method, path, headers)
    subprocess.run(["callgrind_control", "-z", pid], check=True, capture_output=True)
    for _ in range(n):
        request(method, path, headers)
    before = set(glob.glob(os.path.join(work, "cg.out*")))
    subprocess.run(["callgrind_control", "-d", pid], check=True, capture_output=True)
    dump = max(set(glob.glob(os.path.join(work, "cg.out*"))) - before or before, key=os.path.getmtime)
    for line in open(dump):
        if line.startswith("summary:"):
            return int(line.split()[1]) / n
    raise RuntimeError("no summary in " + dump)


sizes = [("64", 400), ("1k", 400), ("16k", 200), ("1m", 10), ("16m", 2)] if "tag" in parts else []
if sizes:
    print(f"{'request':<28} {'plain':>12} {'tower-etag':>12} {'Δ':>10} {'naive':>12} {'Δ':>10}")
for size, n in sizes:
    for suffix in ("", "/multi"):
        plain = count("GET", f"/plain/{size}{suffix}", n)
        etag = count("GET", f"/etag/{size}{suffix}", n)
        naive = count("GET", f"/naive/{size}{suffix}", n)
        print(f"GET {size + suffix:<24} {plain:>12,.0f} {etag:>12,.0f} {etag - plain:>+10,.0f} {naive:>12,.0f} {naive - plain:>+10,.0f}")
    if size in ("1k", "1m"):
        tag = request("GET", f"/etag/{size}").getheader("etag")
        not_modified = count("GET", f"/etag/{size}", n, {"If-None-Match": tag})
        plain = count("GET", f"/plain/{size}", n)
        print(f"GET {size} If-None-Match (304)  {plain:>12,.0f} {not_modified:>12,.0f} {not_modified - plain:>+10,.0f}")
print()
if "untouched" in parts:
    print(f"{'untouched request':<28} {'plain':>12} {'noop layer':>12} {'Δ':>10} {'tower-etag':>12} {'Δ':>10}")
for label, method, plain_path, noop_path, etag_path in [] if "untouched" not in parts else [
    ("POST", "POST", "/plain/post", "/noop/post", "/etag/post"),
    ("GET 404", "GET", "/plain/missing", "/noop/missing", "/etag/missing"),
    ("GET over the cap", "GET", "/plain/announced", "/noop/announced", "/etag-small/announced"),
]:
    plain = count(method, plain_path, 400)
    noop = count(method, noop_path, 400)
    etag = count(method, etag_path, 400)
    print(f"{label:<28} {plain:>12,.0f} {noop:>12,.0f} {noop - plain:>+10,.0f} {etag:>12,.0f} {etag - plain:>+10,.0f}")

if "cache" in parts:
    # The validator cache: its miss path against the same layer without it,
    # and its hits against the ETag layer's own 304 and against plain.
    print()
    # "+ noop layer" is the same stack with a do-nothing layer where the
    # cache would be: what any second `Router::layer` costs.
    print(f"{'validator cache, miss':<28} {'tower-etag':>12} {'+ noop layer':>12} {'+ cache':>12} {'Δ cache':>9} {'Δ %':>7} {'Δ noop':>8}")
    for label, size, n, headers in [
        ("GET 64 (fills)", "64", 400, None),
        ("GET 1k (fills)", "1k", 400, None),
        ("GET 16k (fills)", "16k", 200, None),
        ("GET 1k other tag", "1k", 400, {"If-None-Match": '"other"'}),
    ]:
        etag = count("GET", f"/etag/{size}", n, headers)
        noop = count("GET", f"/etag-noop/{size}", n, headers)
        cached = count("GET", f"/cached/{size}", n, headers)
        print(f"{label:<28} {etag:>12,.0f} {noop:>12,.0f} {cached:>12,.0f} {cached - etag:>+9,.0f} {(cached / etag - 1) * 100:>+6.1f}% {noop - etag:>+8,.0f}")
    print()
    # "one layer": both layers in one `Router::layer(ServiceBuilder…)` call.
    print(f"{'cache hit (304)':<28} {'plain 200':>12} {'etag 304':>12} {'hit':>12} {'one layer':>12}")
    for size, n in [("1k", 400), ("1m", 10)]:
        tag = request("GET", f"/cached/{size}").getheader("etag")
        request("GET", f"/cached-one/{size}")
        plain = count("GET", f"/plain/{size}", n)
        etag_304 = count("GET", f"/etag/{size}", n, {"If-None-Match": tag})
        hit = count("GET", f"/cached/{size}", max(n, 400), {"If-None-Match": tag})
        one = count("GET", f"/cached-one/{size}", max(n, 400), {"If-None-Match": tag})
        print(f"GET {size:<24} {plain:>12,.0f} {etag_304:>12,.0f} {hit:>12,.0f} {one:>12,.0f}")
PY
