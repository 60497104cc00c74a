#!/usr/bin/env bash
# Load test of the validator cache shared on Redis, over loopback: two
# replicas of examples/replica.rs (one Tokio thread each) and redis-server
# on one core, wrk on the other; runs repeated, ratios paired within each
# repetition (median and range). Entries are filled through replica B; the
# measured hits go through replica A, so every one of them comes from
# Redis, and one run drives both replicas at once.
#
# - 1 MiB: a Redis hit, an in-memory hit and the tagged 200 it saves;
#   1 KiB: a Redis hit and an in-memory hit;
# - a handler that awaits 2 ms (as a database query would): latency of a
#   Redis hit, an in-memory hit and the same revalidation without a cache
#   (the handler runs, the ETag layer turns its 200 into a 304);
# - Redis commands per hit, from Redis's own counters;
# - with TLS=1 (the default; needs openssl): the same Redis also listens
#   with TLS, and a third replica reaches it through rediss://: a TLS hit
#   against a plain-TCP hit, alternated in each repetition;
# - with CLUSTER=1 (the default): a Redis Cluster of three primaries on the
#   same core, and a fourth replica on it (--cluster): a cluster hit against
#   a single-server hit, 1 MiB and 1 KiB, alternated in each repetition.
#
#   bash benches/redis_load.sh          # about 3 minutes
#   REPS=3 DURATION=2 bash benches/redis_load.sh
#
# Settings (environment): REPS (5), DURATION seconds per run (3),
# CONNECTIONS (32; 8 for the 2 ms handler), SERVER_CPU (0), CLIENT_CPU (1),
# TLS (1), CLUSTER (1).
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-5}
DURATION=${DURATION:-3}
CONNECTIONS=${CONNECTIONS:-32}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
TLS=${TLS:-1}
CLUSTER=${CLUSTER:-1}

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
redis_server=$(command -v redis-server || echo /usr/bin/redis-server)
[ -x "$redis_server" ] || { echo "redis-server is needed: apt-get install redis-server" >&2; exit 1; }
features=redis
[ "$TLS" = 1 ] && features=redis-tls
cargo build --release --example replica --features "$features" --quiet
target_dir=$(cargo metadata --no-deps --format-version 1 | grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)

work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
tls=()
if [ "$TLS" = 1 ]; then
    command -v openssl >/dev/null || { echo "openssl is needed for TLS=1: apt-get install openssl (or TLS=0)" >&2; exit 1; }
    tls_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    (
        cd "$work"
        openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=bench CA" -keyout ca.key -out ca.pem 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout server.key -out server.csr 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile server.ext -out server.pem 2>/dev/null
    )
    tls=(--tls-port "$tls_port" --tls-cert-file "$work/server.pem" --tls-key-file "$work/server.key"
        --tls-ca-cert-file "$work/ca.pem" --tls-auth-clients no)
fi
taskset -c "$SERVER_CPU" "$redis_server" --port "$port" "${tls[@]}" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
pids+=($!)
redis_pid=$!
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done

# start_replica NAME URL [replica flags...]
start_replica() {
    local name=$1 url=$2
    shift 2
    taskset -c "$SERVER_CPU" "$target_dir/release/examples/replica" 127.0.0.1:0 \
        --redis "$url" --db "$work/notes.db" "$@" >"$work/$name.log" 2>&1 &
    pids+=($!)
    echo $! >"$work/$name.pid"
    for _ in $(seq 1 100); do
        grep -q 'listening on' "$work/$name.log" && break
        sleep 0.1
    done
}
start_replica a "redis://127.0.0.1:$port/"
start_replica b "redis://127.0.0.1:$port/"
a=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$work/a.log")
b=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$work/b.log")
a_pid=$(cat "$work/a.pid")
if [ "$TLS" = 1 ]; then
    start_replica t "rediss://127.0.0.1:$tls_port/" --redis-ca "$work/ca.pem"
    t=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$work/t.log")
    t_pid=$(cat "$work/t.pid")
fi

if [ "$CLUSTER" = 1 ]; then
    # Three primaries (no replicas: their replication would share the
    # core), slots split in three, formed by hand.
    cluster_ports=()
    for _ in 1 2 3; do
        node=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        bus=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        taskset -c "$SERVER_CPU" "$redis_server" --port "$node" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
            --cluster-enabled yes --cluster-port "$bus" --cluster-config-file "nodes-$node.conf" >"$work/redis-$node.log" 2>&1 &
        pids+=($!)
        cluster_ports+=("$node") cluster_buses+=("$bus")
    done
    for node in "${cluster_ports[@]}"; do
        for _ in $(seq 1 100); do
            (exec 3<>"/dev/tcp/127.0.0.1/$node") 2>/dev/null && break
            sleep 0.1
        done
    done
    redis-cli -p "${cluster_ports[0]}" CLUSTER ADDSLOTSRANGE 0 5460 >/dev/null
    redis-cli -p "${cluster_ports[1]}" CLUSTER ADDSLOTSRANGE 5461 10922 >/dev/null
    redis-cli -p "${cluster_ports[2]}" CLUSTER ADDSLOTSRANGE 10923 16383 >/dev/null
    for i in 1 2; do
        redis-cli -p "${cluster_ports[0]}" CLUSTER MEET 127.0.0.1 "${cluster_ports[$i]}" "${cluster_buses[$i]}" >/dev/null
    done
    for _ in $(seq 1 200); do
        ok=0
        for node in "${cluster_ports[@]}"; do
            redis-cli -p "$node" CLUSTER INFO | grep -q 'cluster_state:ok' && ok=$((ok + 1))
        done
        [ "$ok" = 3 ] && break
        sleep 0.1
    done
    [ "$ok" = 3 ] || { echo "the cluster never became ready" >&2; exit 1; }
    seeds=()
    for node in "${cluster_ports[@]}"; do seeds+=(--redis "redis://127.0.0.1:$node/"); done
    start_replica c "redis://127.0.0.1:${cluster_ports[0]}/" "${seeds[@]:2}" --cluster
    c=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$work/c.log")
    c_pid=$(cat "$work/c.pid")
fi

# Fills through B (the same Host on both replicas, as behind a load
# balancer), for the Redis and in-memory caches of each.
host='notes.example'
etag_of() {
    python3 - "$1" "$host" <<'PY'
import sys, time, urllib.request
request = urllib.request.Request(sys.argv[1], headers={"Host": sys.argv[2]})
print(urllib.request.urlopen(request).headers["ETag"])
time.sleep(0.2)  # fills are stored in the background
PY
}
tag_1m=$(etag_of "$b/content/1m")
tag_1k=$(etag_of "$b/content/1k")
tag_slow=$(etag_of "$b/slow/1k")
etag_of "$a/memory/content/1m" >/dev/null
etag_of "$a/memory/content/1k" >/dev/null
etag_of "$a/memory/slow/1k" >/dev/null
if [ "$CLUSTER" = 1 ]; then
    # The cluster's entries, filled through the replica that reads them
    # (the same tags: the same content), until they are hits.
    for _ in $(seq 1 50); do
        etag_of "$c/content/1m" >/dev/null
        etag_of "$c/content/1k" >/dev/null
        [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $host" -H "If-None-Match: $tag_1k" "$c/content/1k")" = 304 ] &&
            curl -s "$c/stats" | grep -q '"redis":{"hits":[1-9]' && break
    done
fi

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
# Commands clients have sent Redis (INFO's own included); those the scripts
# run inside Redis (TIME, GET, SET...) are not round trips and not counted.
redis_calls() {
    redis-cli -p "$port" INFO commandstats | tr -d '\r' |
        awk -F'[=,:]' '/^cmdstat_(evalsha|eval|mget|script|info|scan|unlink):/ { s += $3 } END { print s }'
}

# Microseconds Redis spent in the commands clients sent per request (INFO's
# excluded; a script's time includes the commands it runs, which
# commandstats also lists on their own lines, as TIME, GET and SET, and
# which are not added again; the once-a-second TIME of the connection
# check is left out for the same reason), from its own counters.
redis_usec() {
    redis-cli -p "$port" INFO commandstats | tr -d '\r' |
        awk -F'[=,:]' '/^cmdstat_(evalsha|eval|mget|script|scan|unlink):/ { s += $5 } END { print s + 0 }'
}

# run LABEL CONNECTIONS URL [wrk args...]: one wrk run against replica A
# (or the replica whose pid is in $measured), one row of results (server
# CPU is that replica's).
run() {
    local label=$1 connections=$2 url=$3
    shift 3
    local before after out pid=${measured:-$a_pid}
    before=$(ticks "$pid")
    out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$connections" -d"${DURATION}s" --latency -H "Host: $host" "$@" "$url")
    after=$(ticks "$pid")
    record "$label" "$out" $((after - before))
}

record() {
    local label=$1 out=$2 t=$3
    if echo "$out" | grep -q 'Socket errors'; then
        echo "$out" >&2
        exit 1
    fi
    echo "$out" | awk -v label="$label" -v rep="$rep" -v t="$t" -v hz="$hz" -f benches/support/wrk_row.awk |
        tee -a "$work/runs.csv"
}

echo "redis-server and both replicas on cpu $SERVER_CPU, wrk on cpu $CLIENT_CPU, ${DURATION}s runs, $REPS repetitions"
echo "label,rep,requests_per_sec,server_cpu_us,p50_us,p99_us,requests"
for rep in $(seq 1 "$REPS"); do
    run tagged_1m "$CONNECTIONS" "$a/none/content/1m"
    run memory_hit_1m "$CONNECTIONS" "$a/memory/content/1m" -H "If-None-Match: $tag_1m"
    calls=$(redis_calls)
    usec=$(redis_usec)
    redis_ticks=$(ticks "$redis_pid")
    run redis_hit_1m "$CONNECTIONS" "$a/content/1m" -H "If-None-Match: $tag_1m"
    redis_ticks=$(($(ticks "$redis_pid") - redis_ticks))
    hits=$(tail -n1 "$work/runs.csv" | cut -d, -f7)
    # Less the two INFO calls of the readings before the run.
    echo "redis_commands,$rep,$(($(redis_calls) - calls - 2)),$hits,$(($(redis_usec) - usec)),$redis_ticks" >>"$work/commands.csv"
    # Both replicas at once, half the connections each.
    out_a=$work/both_a.txt out_b=$work/both_b.txt
    taskset -c "$CLIENT_CPU" wrk -t1 -c$((CONNECTIONS / 2)) -d"${DURATION}s" --latency -H "Host: $host" -H "If-None-Match: $tag_1m" "$a/content/1m" >"$out_a" &
    taskset -c "$CLIENT_CPU" wrk -t1 -c$((CONNECTIONS / 2)) -d"${DURATION}s" --latency -H "Host: $host" -H "If-None-Match: $tag_1m" "$b/content/1m" >"$out_b"
    wait $!
    rps=$(awk '/^Requests\/sec/ { s += $2 } END { print s }' "$out_a" "$out_b")
    echo "redis_hit_1m_both,$rep,$rps,0,0,0,0" | tee -a "$work/runs.csv"
    run memory_hit_1k "$CONNECTIONS" "$a/memory/content/1k" -H "If-None-Match: $tag_1k"
    run redis_hit_1k "$CONNECTIONS" "$a/content/1k" -H "If-None-Match: $tag_1k"
    run slow_no_cache 8 "$a/none/slow/1k" -H "If-None-Match: $tag_slow"
    run slow_memory_hit 8 "$a/memory/slow/1k" -H "If-None-Match: $tag_slow"
    run slow_redis_hit 8 "$a/slow/1k" -H "If-None-Match: $tag_slow"
    if [ "$TLS" = 1 ]; then
        # Which goes first alternates with the repetition.
        if [ $((rep % 2)) = 1 ]; then
            measured=$t_pid run redis_hit_1m_tls "$CONNECTIONS" "$t/content/1m" -H "If-None-Match: $tag_1m"
            run redis_hit_1m_plain "$CONNECTIONS" "$a/content/1m" -H "If-None-Match: $tag_1m"
        else
            run redis_hit_1m_plain "$CONNECTIONS" "$a/content/1m" -H "If-None-Match: $tag_1m"
            measured=$t_pid run redis_hit_1m_tls "$CONNECTIONS" "$t/content/1m" -H "If-None-Match: $tag_1m"
        fi
    fi
    if [ "$CLUSTER" = 1 ]; then
        # Which goes first alternates with the repetition.
        for size in 1m 1k; do
            tag_var=tag_$size
            if [ $((rep % 2)) = 1 ]; then
                measured=$c_pid run "redis_hit_${size}_cluster" "$CONNECTIONS" "$c/content/$size" -H "If-None-Match: ${!tag_var}"
                run "redis_hit_${size}_single" "$CONNECTIONS" "$a/content/$size" -H "If-None-Match: ${!tag_var}"
            else
                run "redis_hit_${size}_single" "$CONNECTIONS" "$a/content/$size" -H "If-None-Match: ${!tag_var}"
                measured=$c_pid run "redis_hit_${size}_cluster" "$CONNECTIONS" "$c/content/$size" -H "If-None-Match: ${!tag_var}"
            fi
        done
    fi
done
curl -s "$a/stats" >"$work/stats.json"
if [ "$CLUSTER" = 1 ]; then curl -s "$c/stats" >"$work/stats_c.json"; else echo '{}' >"$work/stats_c.json"; fi

python3 - "$work/runs.csv" "$work/commands.csv" "$work/stats.json" "$work/stats_c.json" "$hz" <<'PY'
import json, statistics, sys

sys.path.insert(0, "benches")
from loadstats import WrkRows

runs = WrkRows(sys.argv[1])
rows = [line.strip().split(",") for line in open(sys.argv[2])]
commands = [int(row[2]) / int(row[3]) for row in rows]
redis_us = [int(row[4]) / int(row[3]) for row in rows]
hz = int(sys.argv[5])
redis_cpu_us = [int(row[5]) * 1e6 / hz / int(row[3]) for row in rows]
stats = json.load(open(sys.argv[3]))
# Two wrk at once: their total requests/s only.
runs.print_table(totals_only={"redis_hit_1m_both"})
ratio = runs.ratio
print()
print("paired ratios of requests/s, median (range):")
print(f"  1 MiB Redis hit / tagged 200           {ratio('redis_hit_1m', 'tagged_1m')}")
print(f"  1 MiB Redis hit / in-memory hit        {ratio('redis_hit_1m', 'memory_hit_1m')}")
print(f"  1 KiB Redis hit / in-memory hit        {ratio('redis_hit_1k', 'memory_hit_1k')}")
print(f"  both replicas / replica A alone        {ratio('redis_hit_1m_both', 'redis_hit_1m')}")
print(f"  2 ms handler: Redis hit / no cache     {ratio('slow_redis_hit', 'slow_no_cache')}")
if "redis_hit_1m_tls" in runs.runs:
    print(f"  1 MiB Redis hit: TLS / plain TCP       {ratio('redis_hit_1m_tls', 'redis_hit_1m_plain')}")
if "redis_hit_1m_cluster" in runs.runs:
    print(f"  1 MiB Redis hit: cluster / single      {ratio('redis_hit_1m_cluster', 'redis_hit_1m_single')}")
    print(f"  1 KiB Redis hit: cluster / single      {ratio('redis_hit_1k_cluster', 'redis_hit_1k_single')}")
print(f"Redis commands sent per hit: {statistics.median(commands):.3f}")
print(f"Redis's command time per hit (INFO commandstats usec): {statistics.median(redis_us):.2f} µs "
      f"({min(redis_us):.2f}–{max(redis_us):.2f}); socket I/O and parsing are not in it")
print(f"redis-server's CPU time per hit (its process, socket I/O included): {statistics.median(redis_cpu_us):.2f} µs "
      f"({min(redis_cpu_us):.2f}–{max(redis_cpu_us):.2f}): one Redis core serves at most "
      f"{1e6 / statistics.median(redis_cpu_us):,.0f} hits/s")
print(f"replica A's Redis cache: {stats['redis']}")
cluster_stats = json.load(open(sys.argv[4]))
if cluster_stats:
    print(f"replica C's Redis Cluster cache: {cluster_stats['redis']}")
PY
