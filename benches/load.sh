#!/usr/bin/env bash
# Load test over loopback: the load server (examples/load_server.rs) on one
# core, wrk on the other, plain / tower-etag / naive runs alternated, each
# configuration repeated; at 1 KiB and on the untouched paths also a
# `Router::layer` that does nothing, for what any layer costs. Prints
# requests/s and server CPU µs per request (user + system, from /proc) with
# their ratios to plain (medians of per-repetition ratios, with their range),
# and the CPU each large tagged response costs over plain next to the bare
# BLAKE3 cost of its body (criterion's `blake3_floor`, and for streamed
# bodies `blake3_frames`, run afterwards), and
# writes every run to a CSV.
#
#   bash benches/load.sh                     # everything, about 25 minutes;
#                                            # rewrites benches/load.csv and
#                                            # benches/load.svg
#   SIZES="1k" REPS=5 bash benches/load.sh   # a subset
#
# Settings (environment): SIZES (64 1k 16k 1m 16m), REPS (7), DURATION
# seconds per run (4), CONNECTIONS (32), CSV (benches/load.csv), SVG
# (benches/load.svg), SERVER_CPU (0), CLIENT_CPU (1), EXTRAS (1: also the
# untouched paths), FLOOR (1: also run criterion's BLAKE3 floors).
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${SIZES:-"64 1k 16k 1m 16m"}
REPS=${REPS:-7}
DURATION=${DURATION:-4}
CONNECTIONS=${CONNECTIONS:-32}
CSV=${CSV:-benches/load.csv}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
EXTRAS=${EXTRAS:-1}
FLOOR=${FLOOR:-1}

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
cargo build --release --example load_server --quiet
[ "$FLOOR" = 1 ] && cargo bench --bench etag --no-run --locked --quiet 2>/dev/null
target_dir=$(cargo metadata --no-deps --format-version 1 | grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)

work=$(mktemp -d)
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
taskset -c "$SERVER_CPU" "$target_dir/release/examples/load_server" 127.0.0.1:0 >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do grep -q listening "$work/server.log" && break; sleep 0.1; done
base=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$work/server.log")

cat >"$work/post.lua" <<'LUA'
wrk.method = "POST"
LUA

# Server CPU time in clock ticks (user + system).
ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }
hz=$(getconf CLK_TCK)

# run LABEL MODE URL [wrk args...]: one wrk run, one CSV row.
run() {
    local label=$1 mode=$2 url=$3
    shift 3
    local before after out rps requests cpu
    before=$(ticks)
    out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --timeout 30s "$@" "$url")
    after=$(ticks)
    rps=$(echo "$out" | awk '/^Requests\/sec/ {print $2}')
    requests=$(echo "$out" | awk '/requests in/ {print $1}')
    if echo "$out" | grep -q 'Socket errors\|Non-2xx'; then
        if ! { [ "$mode" = etag_304 ] || [ "$label" = missing ]; }; then
            echo "$out" >&2
            echo "unexpected errors in $label $mode" >&2
            exit 1
        fi
    fi
    cpu=$(awk -v t=$((after - before)) -v hz="$hz" -v n="$requests" 'BEGIN {printf "%.2f", t / hz * 1e6 / n}')
    echo "$label,$mode,$rep,$rps,$cpu" >>"$CSV"
    printf '  %-14s %-10s %12s req/s %9s µs/req\n' "$label" "$mode" "$rps" "$cpu"
}

echo "label,mode,rep,requests_per_sec,server_cpu_us_per_request" >"$CSV"
echo "server on cpu $SERVER_CPU, wrk on cpu $CLIENT_CPU, ${DURATION}s runs, $CONNECTIONS connections, $REPS repetitions"
for rep in $(seq 1 "$REPS"); do
    echo "repetition $rep"
    for size in $SIZES; do
        for chunking in "" /multi; do
            label="$size${chunking:+-multi}"
            # Alternate the order between repetitions.
            modes="plain etag naive"
            [ "$label" = 1k ] && modes="plain noop etag naive"
            [ $((rep % 2)) -eq 0 ] && modes=$(echo "$modes" | tr ' ' '\n' | tac | xargs)
            for mode in $modes; do
                run "$label" "$mode" "$base/$mode/$size$chunking"
            done
        done
        if [ "$size" = 1m ] || [ "$size" = 1k ]; then
            tag=$(curl -s -o /dev/null -D - "$base/etag/$size" | tr -d '\r' | awk -F': ' 'tolower($1) == "etag" {print $2}')
            run "$size" etag_304 "$base/etag/$size" -H "If-None-Match: $tag"
        fi
    done
    if [ "$EXTRAS" = 1 ]; then
        # Paths the layer must leave alone, in alternating order too.
        modes="plain noop etag"
        [ $((rep % 2)) -eq 0 ] && modes="etag noop plain"
        for mode in $modes; do
            run post "$mode" "$base/$mode/post" -s "$work/post.lua"
        done
        for mode in $modes; do
            run missing "$mode" "$base/$mode/missing"
        done
        for mode in $modes; do
            prefix=$mode
            [ "$mode" = etag ] && prefix=etag-small
            run over-cap "$mode" "$base/$prefix/announced"
        done
    fi
done

# Memory: a 1 GiB response streamed through the layer with its default 2 MiB
# cap, in a fresh server process, so that its peak resident set is this
# response's.
kill $server 2>/dev/null || true
wait $server 2>/dev/null || true
taskset -c "$SERVER_CPU" "$target_dir/release/examples/load_server" 127.0.0.1:0 >"$work/server2.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do grep -q listening "$work/server2.log" && break; sleep 0.1; done
base=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$work/server2.log")
hwm() { awk '/VmHWM/ {print $2}' "/proc/$server/status"; }
curl -s -o /dev/null "$base/plain/1k"
before=$(hwm)
for path in plain/stream/1024 etag-default/stream/1024; do
    got=$(curl -s -o /dev/null -w '%{size_download} %{http_code}' -D "$work/headers" "$base/$path")
    tagged=$(grep -ci '^etag:' "$work/headers" || true)
    echo "memory: $path: $got (bytes, status), etag headers: $tagged, peak RSS $(hwm) KiB (before: $before KiB)"
done
kill $server 2>/dev/null || true
wait $server 2>/dev/null || true

# The bare BLAKE3 cost of each body, on the server's core, for the CPU
# figures of large responses.
if [ "$FLOOR" = 1 ]; then
    echo "BLAKE3 of each body, in one call and frame by frame (criterion, on cpu $SERVER_CPU):"
    taskset -c "$SERVER_CPU" cargo bench --bench etag --locked --quiet -- 'single/blake3_floor|multi/blake3_frames' 2>&1 |
        grep -E '^response|time:' || true
fi

echo
echo "over $REPS repetitions (ratios to plain paired by repetition, side by side in this run):"
python3 benches/load_table.py --text "$CSV" "$target_dir/criterion"

# The chart in the README.
machine="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) vCPU, $(uname -sr), $(date -u +%Y-%m-%d)"
python3 benches/chart.py "$CSV" "${SVG:-benches/load.svg}" "$machine"
echo "chart: ${SVG:-benches/load.svg}"
