#!/usr/bin/env bash
# The frame-shape matrix: streamed bodies of 64 KiB, 1 MiB and 16 MiB in
# frames of 1 KiB, 8 KiB, 16 KiB, 64 KiB, 256 KiB or one frame, each frame
# freshly allocated by the handler or sliced from one shared buffer, and
# tower-http's ServeDir serving 1 MiB and 16 MiB files (with its own ETag,
# which the layer keeps, and without it, so that the layer hashes). Each
# shape is served plain, through tower-etag, through the naive `from_fn`
# baseline, and through tower-etag as of a baseline commit (BASELINE,
# default d25c7e8, built from a temporary worktree with this load server),
# alternating, on one pinned server core with wrk pinned on the other.
#
# The shapes in REVALIDATE are also requested with their tag in
# If-None-Match, through tower-etag and through the baseline commit's layer
# (modes etag304 and base304): the handler runs and the body is hashed, then
# a 304 is sent; the summary gives their requests/s against the plain 200.
#
# Prints requests/s and server CPU µs per request, the efficiency
# (plain CPU + one-call BLAKE3 of the body) / tower-etag CPU, and the
# ratios tower-etag / baseline commit and tower-etag / naive (req/s), all
# medians of per-repetition ratios with their range; writes every run to
# a CSV.
#
#   bash benches/frames.sh                       # everything, ~25 minutes
#   BODIES=1m FRAMES="16k 64k" REPS=3 bash benches/frames.sh
#
# Settings (environment): BODIES (64k 1m 16m), FRAMES (1k 8k 16k 64k 256k
# whole), KINDS (fresh shared), FILES (1: the ServeDir rows), REVALIDATE
# (1m/8k/fresh 1m/64k/fresh 1m/64k/shared hashed-1m), REPS (5),
# DURATION seconds per run (2), CONNECTIONS (8), BASELINE (d25c7e8; empty:
# none), CSV (benches/frames.csv), SERVER_CPU (0), CLIENT_CPU (1), and
# LOAD_SERVER_NODELAY=1 to turn Nagle's algorithm off in both servers
# (axum::serve leaves it on): requests/s then show CPU cost rather than
# latency stalls.
set -euo pipefail
cd "$(dirname "$0")/.."

BODIES=${BODIES:-"64k 1m 16m"}
FRAMES=${FRAMES:-"1k 8k 16k 64k 256k whole"}
KINDS=${KINDS:-"fresh shared"}
FILES=${FILES:-1}
REVALIDATE=${REVALIDATE-"1m/8k/fresh 1m/64k/fresh 1m/64k/shared hashed-1m"}
REPS=${REPS:-5}
DURATION=${DURATION:-2}
CONNECTIONS=${CONNECTIONS:-8}
BASELINE=${BASELINE-d25c7e8}
CSV=${CSV:-benches/frames.csv}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
target_dir=$(cargo metadata --no-deps --format-version 1 | grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)

work=$(mktemp -d)
servers=()
cleanup() {
    for pid in "${servers[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [ -n "$BASELINE" ] && [ -d "$work/baseline" ]; then
        git worktree remove --force "$work/baseline" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# The baseline commit's crate, built with this load server (it uses only
# `ETagLayer`, the validator cache and the naive middleware, which the
# baseline has too) and this Cargo.toml's dev-dependencies, in the same
# target directory (its dependencies are this build's) and copied out
# before this tree's server is built over it.
if [ -n "$BASELINE" ]; then
    git worktree add --detach --quiet "$work/baseline" "$BASELINE"
    cp examples/load_server.rs "$work/baseline/examples/load_server.rs"
    mkdir -p "$work/baseline/benches/support"
    cp benches/support/naive.rs "$work/baseline/benches/support/naive.rs"
    python3 - "$work/baseline/Cargo.toml" Cargo.toml <<'PY'
import re, sys
baseline, current = (open(p).read() for p in sys.argv[1:])
section = lambda text: re.search(r"\[dev-dependencies\]\n(?:[^\[].*\n|\n)*", text).group(0)
open(sys.argv[1], "w").write(baseline.replace(section(baseline), section(current)))
PY
    cp Cargo.lock "$work/baseline/Cargo.lock"
    (cd "$work/baseline" && CARGO_TARGET_DIR="$target_dir" \
        cargo build --release --example load_server --quiet)
    cp "$target_dir/release/examples/load_server" "$work/baseline_server"
fi
cargo build --release --example load_server --quiet

# start NAME BINARY: a server on the server core; sets NAME's base URL.
start() {
    local name=$1 binary=$2
    taskset -c "$SERVER_CPU" "$binary" 127.0.0.1:0 >"$work/$name.log" 2>&1 &
    servers+=($!)
    eval "pid_$name=$!"
    for _ in $(seq 1 100); do grep -q listening "$work/$name.log" && break; sleep 0.1; done
    eval "url_$name=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$work/$name.log")"
}
start current "$target_dir/release/examples/load_server"
if [ -n "$BASELINE" ]; then start baseline "$work/baseline_server"; fi

hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# path_of SHAPE PREFIX: the shape's path under a mode's prefix.
path_of() {
    local shape=$1 prefix=$2 body frame kind
    case $shape in
        file-*) echo "$prefix/files/${shape#file-}.bin" ;;
        hashed-*) echo "$prefix/files-untagged/${shape#hashed-}.bin" ;;
        *) IFS=/ read -r body frame kind <<<"$shape"; echo "$prefix/frames/$body/$frame/$kind" ;;
    esac
}

# tag_of SHAPE: the ETag tower-etag gives the shape's body.
tag_of() {
    curl -s -o /dev/null -D - "$url_current/$(path_of "$1" etag)" | awk 'tolower($1) == "etag:" {print $2}' | tr -d '\r'
}

# run SHAPE MODE: one wrk run against the mode's server and path.
run() {
    local shape=$1 mode=$2 pid url path before after out rps requests cpu
    local condition=()
    case $mode in
        base) pid=$pid_baseline url=$url_baseline prefix=etag ;;
        base304) pid=$pid_baseline url=$url_baseline prefix=etag ;;
        etag304) pid=$pid_current url=$url_current prefix=etag ;;
        *) pid=$pid_current url=$url_current prefix=$mode ;;
    esac
    path=$(path_of "$shape" "$prefix")
    case $mode in *304) condition=(-H "If-None-Match: ${tags[$shape]}") ;; esac
    before=$(ticks "$pid")
    out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --timeout 30s "${condition[@]}" "$url/$path")
    after=$(ticks "$pid")
    if echo "$out" | grep -q 'Socket errors\|Non-2xx'; then
        echo "$out" >&2
        echo "errors in $shape $mode ($url/$path)" >&2
        exit 1
    fi
    rps=$(echo "$out" | awk '/^Requests\/sec/ {print $2}')
    requests=$(echo "$out" | awk '/requests in/ {print $1}')
    cpu=$(awk -v t=$((after - before)) -v hz="$hz" -v n="$requests" 'BEGIN {printf "%.2f", t / hz * 1e6 / n}')
    echo "$shape,$mode,$rep,$rps,$cpu" >>"$CSV"
    printf '  %-18s %-6s %10s req/s %10s µs/req\n' "$shape" "$mode" "$rps" "$cpu"
}

# Each response must be what its mode promises before anything is timed.
check() {
    local shape=$1 path=$2 want=$3
    local tags
    tags=$(curl -s -o /dev/null -D - "$url_current/etag/$path" | grep -ci '^etag:' || true)
    [ "$tags" = "$want" ] || { echo "$shape: $tags ETag fields through the layer, want $want" >&2; exit 1; }
}

shapes=()
for body in $BODIES; do
    for frame in $FRAMES; do
        for kind in $KINDS; do shapes+=("$body/$frame/$kind"); done
    done
done
if [ "$FILES" = 1 ]; then
    shapes+=(file-1m file-16m hashed-1m hashed-16m)
    check file-1m files/1m.bin 1
    check hashed-1m files-untagged/1m.bin 1
    plain_tags=$(curl -s -o /dev/null -D - "$url_current/plain/files-untagged/1m.bin" | grep -ci '^etag:' || true)
    [ "$plain_tags" = 0 ] || { echo "files-untagged still carries an ETag" >&2; exit 1; }
fi

# The tag of each revalidated shape; every 304 run must get 304s.
declare -A tags
for shape in $REVALIDATE; do
    tags[$shape]=$(tag_of "$shape")
    status=$(curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: ${tags[$shape]}" "$url_current/$(path_of "$shape" etag)")
    [ "$status" = 304 ] || { echo "$shape: $status to its own tag, want 304" >&2; exit 1; }
done

echo "shape,mode,rep,requests_per_sec,server_cpu_us_per_request" >"$CSV"
modes="plain etag naive"
[ -n "$BASELINE" ] && modes="plain etag base naive"
echo "server on cpu $SERVER_CPU, wrk on cpu $CLIENT_CPU, ${DURATION}s runs, $CONNECTIONS connections, $REPS repetitions, baseline ${BASELINE:-none}"
for rep in $(seq 1 "$REPS"); do
    echo "repetition $rep"
    ordered=$modes
    [ $((rep % 2)) -eq 0 ] && ordered=$(echo "$modes" | tr ' ' '\n' | tac | xargs)
    for shape in "${shapes[@]}"; do
        for mode in $ordered; do run "$shape" "$mode"; done
        if [ -n "${tags[$shape]:-}" ]; then
            for mode in etag304 $([ -n "$BASELINE" ] && echo base304); do run "$shape" "$mode"; done
        fi
    done
done

# The one-call BLAKE3 cost of each body, on the server's core.
floors=$(taskset -c "$SERVER_CPU" "$target_dir/release/examples/load_server" --blake3-floor)
echo "$floors"
echo
python3 benches/frames_table.py "$CSV" <(echo "$floors")
