#!/usr/bin/env bash
# Soak test over loopback, bounded in time (about 30 s):
#
# 1. 256 concurrent connections for 10 s (wrk, 2 threads) against the axum
#    example, a mix of plain and conditional GETs on two resources; every
#    response is checked (benches/soak.lua): a 200 carries the exact body of
#    its tag, a 304 a known tag and no body. Fails on any bad response,
#    socket error or non-2xx/3xx status. Prints the server's peak resident
#    memory.
# 2. A 1 GiB streamed response through the layer (default 2 MiB cap) in a
#    fresh load server: every byte arrives, untagged, and the server's peak
#    resident memory stays far below 64 MiB.
#
#   bash benches/soak.sh             # needs wrk and curl
#   CONNECTIONS=512 DURATION=30 bash benches/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."

CONNECTIONS=${CONNECTIONS:-256}
DURATION=${DURATION:-10}

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
cargo build --release --example axum --example load_server --quiet
target_dir=$(cargo metadata --no-deps --format-version 1 | grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)
work=$(mktemp -d)
server=""
trap '[ -n "$server" ] && kill $server 2>/dev/null; rm -rf "$work"' EXIT

start() { # binary, log; sets $server and $base
    "$target_dir/release/examples/$1" 127.0.0.1:0 >"$work/$2" 2>&1 &
    server=$!
    for _ in $(seq 1 100); do grep -q 'listening on' "$work/$2" && break; sleep 0.1; done
    base=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$work/$2" | head -n1)
}
hwm() { awk '/VmHWM/ {print $2}' "/proc/$server/status"; }

# 1. Many clients, every response checked.
start axum axum.log
i=0
for path in / /stats.json; do
    i=$((i + 1))
    echo "$path" >"$work/$i.path"
    curl -s -D "$work/$i.head" -o "$work/$i.body" "$base$path"
    tr -d '\r' <"$work/$i.head" | grep -i '^etag:' | cut -d' ' -f2 >"$work/$i.etag"
    [ -s "$work/$i.etag" ] || { echo "no ETag on $path" >&2; exit 1; }
done
wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --timeout 5s -s benches/soak.lua "$base" -- "$work" "$i" | tee "$work/wrk.out"
echo "axum example: peak resident memory $(hwm) KiB after $CONNECTIONS connections for ${DURATION} s"
grep -q '^checked: .* 0 bad$' "$work/wrk.out" || { echo "FAILED: bad responses" >&2; exit 1; }
grep -q 'socket errors: connect 0, read 0, write 0, timeout 0' "$work/wrk.out" || { echo "FAILED: socket errors" >&2; exit 1; }
if grep -q 'Non-2xx or 3xx' "$work/wrk.out"; then echo "FAILED: error statuses" >&2; exit 1; fi
kill $server; wait $server 2>/dev/null || true

# 2. A gibibyte through the layer, in a fresh process.
start load_server load.log
curl -s -o /dev/null "$base/plain/1k"
before=$(hwm)
got=$(curl -s -o /dev/null -D "$work/stream.head" -w '%{size_download} %{http_code}' "$base/etag-default/stream/1024")
peak=$(hwm)
tagged=$(tr -d '\r' <"$work/stream.head" | grep -ci '^etag:' || true)
echo "1 GiB stream through the layer: $got (bytes, status), etag fields: $tagged, peak resident memory $peak KiB (before: $before KiB)"
[ "$got" = "1073741824 200" ] && [ "$tagged" = 0 ] && [ "$peak" -lt $((64 * 1024)) ] || { echo "FAILED" >&2; exit 1; }
echo "soak: ok"
