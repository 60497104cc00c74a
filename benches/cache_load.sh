#!/usr/bin/env bash
# Load test of the validator cache over loopback: the load server
# (examples/load_server.rs) on one core, wrk on the other, runs alternated
# and repeated, ratios paired within each repetition (median and range):
# - a hit (304 from the cache) against a plain 200 at 1 KiB (with the two
#   layers added by two `Router::layer` calls, as in the docs, by one, and
#   with the cache around the whole `Router`, a second server started with
#   `--cache-outside`), and against the tagged 200 it saves at 1 KiB and
#   1 MiB;
# - a handler that awaits 2 ms (as a database query would): latency
#   percentiles of a hit, of a miss through the cache, and of the same
#   request without the cache.
#
#   bash benches/cache_load.sh          # about 5 minutes
#   REPS=3 DURATION=2 bash benches/cache_load.sh
#
# Settings (environment): REPS (7), DURATION seconds per run (3),
# CONNECTIONS (32; 8 for the 2 ms handler), SERVER_CPU (0), CLIENT_CPU (1).
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-7}
DURATION=${DURATION:-3}
CONNECTIONS=${CONNECTIONS:-32}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
cargo build --release --example load_server --quiet
target_dir=$(cargo metadata --no-deps --format-version 1 | grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)

work=$(mktemp -d)
trap 'kill $server $outside 2>/dev/null || true; rm -rf "$work"' EXIT
taskset -c "$SERVER_CPU" "$target_dir/release/examples/load_server" 127.0.0.1:0 >"$work/server.log" 2>&1 &
server=$!
taskset -c "$SERVER_CPU" "$target_dir/release/examples/load_server" 127.0.0.1:0 --cache-outside >"$work/outside.log" 2>&1 &
outside=$!
for log in server outside; do
    for _ in $(seq 1 100); do grep -q listening "$work/$log.log" && break; sleep 0.1; done
done
base=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$work/server.log")
base_outside=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$work/outside.log")

etag_of() {
    python3 - "$1" <<'PY'
import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1]).headers["ETag"])
PY
}
tag_1k=$(etag_of "$base/cached/1k")
etag_of "$base/cached-one/1k" >/dev/null
tag_1m=$(etag_of "$base/cached/1m")
tag_slow=$(etag_of "$base/cached/slow/1k")
[ "$(etag_of "$base_outside/etag/1k")" = "$tag_1k" ] || { echo "the cache outside the router saw another tag" >&2; exit 1; }

# The server whose CPU a run reads: the cache-outside one for its rows.
pid=$server
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)

# run LABEL CONNECTIONS URL [wrk args...]: one wrk run, one row of results.
run() {
    local label=$1 connections=$2 url=$3
    shift 3
    local before after out
    before=$(ticks)
    out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$connections" -d"${DURATION}s" --latency "$@" "$url")
    after=$(ticks)
    if echo "$out" | grep -q 'Socket errors'; then
        echo "$out" >&2
        exit 1
    fi
    echo "$out" | awk -v label="$label" -v rep="$rep" -v t=$((after - before)) -v hz="$hz" -f benches/support/wrk_row.awk |
        tee -a "$work/runs.csv"
}

echo "server on cpu $SERVER_CPU, wrk on cpu $CLIENT_CPU, ${DURATION}s runs, $REPS repetitions"
echo "label,rep,requests_per_sec,server_cpu_us,p50_us,p99_us,requests"
for rep in $(seq 1 "$REPS"); do
    # Alternate the order of each pair from one repetition to the next.
    if [ $((rep % 2)) = 1 ]; then first=plain; else first=hit; fi
    for which in $first $([ $first = plain ] && echo hit || echo plain); do
        case $which in
        plain) run plain_1k "$CONNECTIONS" "$base/plain/1k" ;;
        hit) run hit_1k "$CONNECTIONS" "$base/cached/1k" -H "If-None-Match: $tag_1k" ;;
        esac
    done
    run hit_1k_one "$CONNECTIONS" "$base/cached-one/1k" -H "If-None-Match: $tag_1k"
    pid=$outside
    run hit_1k_outside "$CONNECTIONS" "$base_outside/etag/1k" -H "If-None-Match: $tag_1k"
    pid=$server
    run tagged_1k "$CONNECTIONS" "$base/etag/1k"
    run tagged_1m "$CONNECTIONS" "$base/etag/1m"
    run hit_1m "$CONNECTIONS" "$base/cached/1m" -H "If-None-Match: $tag_1m"
    run slow_no_cache 8 "$base/etag/slow/1k" -H "If-None-Match: $tag_slow"
    run slow_miss 8 "$base/cached/slow/1k" -H 'If-None-Match: "other"'
    run slow_hit 8 "$base/cached/slow/1k" -H "If-None-Match: $tag_slow"
done

python3 - "$work/runs.csv" <<'PY'
import sys

sys.path.insert(0, "benches")
from loadstats import WrkRows

runs = WrkRows(sys.argv[1])
runs.print_table()
ratio = runs.ratio
print()
print("paired ratios of requests/s, median (range):")
print(f"  1 KiB hit / plain 200        {ratio('hit_1k', 'plain_1k')}")
print(f"    one Router::layer call     {ratio('hit_1k_one', 'plain_1k')}")
print(f"    cache around the Router    {ratio('hit_1k_outside', 'plain_1k')}")
print(f"  1 KiB hit / tagged 200       {ratio('hit_1k', 'tagged_1k')}")
print(f"  1 MiB hit / tagged 200       {ratio('hit_1m', 'tagged_1m')}")
print(f"  2 ms handler: hit / no cache {ratio('slow_hit', 'slow_no_cache')}")
PY
