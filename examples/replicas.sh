#!/usr/bin/env bash
# Two replicas of examples/replica.rs sharing one Redis and one SQLite file,
# as a deployment behind a load balancer runs them (each replica would be a
# container; Redis another):
#
#   redis:      redis-server, no persistence needed
#   replica a:  replica ADDR --redis redis://redis:6379/ --db /data/notes.db
#   replica b:  the same command line (same Redis, same key prefix, same
#               CACHE_SECRET, same host name seen by clients)
#   on a Redis Cluster: replica ADDR --cluster --redis redis://node1:6379/
#               --redis redis://node2:6379/ … (any nodes, as seeds)
#
# It fills the cache through replica a, revalidates through replica b (a 304
# with b's handler never run), writes through b, and revalidates through a
# again (the new note); then a PUT with a stale If-Match is refused with 412
# and one with the current tag is accepted. Last, a third replica runs with
# --strict (strict writes): while Redis is paused, its PUT is refused with
# 503 and Retry-After and writes nothing, a PUT through a default replica
# goes on, and reads still answer; once Redis is back, strict writes go
# through again. Needs redis-server (Debian: redis-server) and curl.
#
#   bash examples/replicas.sh        # Redis over plain TCP
#   bash examples/replicas.sh tls    # Redis with TLS only, client
#                                    # certificates required (mutual TLS);
#                                    # certificates made with openssl
#   bash examples/replicas.sh cluster  # a Redis Cluster of six nodes (three
#                                    # primaries, a replica each; needs
#                                    # redis-cli, Debian: redis-tools), every
#                                    # node given as a seed; at the end every
#                                    # shard fails over, and hits resume
set -euo pipefail
mode=${1:-plain}
case "$mode" in
    plain | tls | cluster) ;;
    *) echo "usage: bash examples/replicas.sh [plain|tls|cluster]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."

redis_server=$(command -v redis-server || echo /usr/bin/redis-server)
[ -x "$redis_server" ] || { echo "redis-server is needed: apt-get install redis-server" >&2; exit 1; }
features=redis
[ "$mode" = tls ] && features=redis-tls
cargo build --example replica --features "$features" --locked --quiet
target_dir=$(cargo metadata --no-deps --format-version 1 | grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)

work=$(mktemp -d)
pids=()
# (SIGCONT first: a Redis left paused would not end on SIGTERM.)
trap 'kill -CONT "${pids[@]}" 2>/dev/null || true; kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis_url="redis://127.0.0.1:$port/"
listen=(--port "$port")
replica_tls=()
if [ "$mode" = tls ]; then
    command -v openssl >/dev/null || { echo "openssl is needed for the tls mode: apt-get install openssl" >&2; exit 1; }
    # A CA, a certificate for the server (127.0.0.1) and one for the
    # replicas, each signed by the CA.
    (
        cd "$work"
        openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=replicas demo CA" -keyout ca.key -out ca.pem 2>/dev/null
        for who in server client; do
            openssl req -newkey rsa:2048 -nodes -subj "/CN=$who" -keyout "$who.key" -out "$who.csr" 2>/dev/null
        done
        printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >server.ext
        printf 'extendedKeyUsage=clientAuth\n' >client.ext
        for who in server client; do
            openssl x509 -req -in "$who.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile "$who.ext" -out "$who.pem" 2>/dev/null
        done
    )
    redis_url="rediss://127.0.0.1:$port/"
    listen=(--port 0 --tls-port "$port" --tls-cert-file "$work/server.pem" --tls-key-file "$work/server.key"
        --tls-ca-cert-file "$work/ca.pem" --tls-auth-clients yes)
    replica_tls=(--redis-ca "$work/ca.pem" --redis-cert "$work/client.pem" --redis-key "$work/client.key")
fi
wait_for_port() {
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return
        sleep 0.1
    done
}
redis_flags=(--redis "$redis_url")
redis_pids=()
if [ "$mode" = cluster ]; then
    redis_cli=$(command -v redis-cli || echo /usr/bin/redis-cli)
    [ -x "$redis_cli" ] || { echo "redis-cli is needed for the cluster mode: apt-get install redis-tools" >&2; exit 1; }
    ports=() redis_flags=(--cluster)
    for _ in 1 2 3 4 5 6; do
        port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        # The cluster bus's port too (by default the port plus 10000: past
        # 65535 for a free port above 55535).
        bus=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        "$redis_server" --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
            --cluster-enabled yes --cluster-port "$bus" --cluster-config-file "nodes-$port.conf" --cluster-node-timeout 1000 \
            --repl-diskless-sync-delay 0 >"$work/redis-$port.log" 2>&1 &
        pids+=($!) redis_pids+=($!) ports+=("$port")
        redis_flags+=(--redis "redis://127.0.0.1:$port/")
    done
    for port in "${ports[@]}"; do wait_for_port "$port"; done
    "$redis_cli" --cluster create $(printf '127.0.0.1:%s ' "${ports[@]}") --cluster-replicas 1 --cluster-yes >"$work/create.log" 2>&1 \
        || { cat "$work/create.log"; exit 1; }
    # cluster_healthy: every node sees the cluster ok, every replica is in
    # sync with its primary.
    cluster_healthy() {
        for port in "${ports[@]}"; do
            "$redis_cli" -p "$port" cluster info | grep -q 'cluster_state:ok' || return 1
            info=$("$redis_cli" -p "$port" info replication | tr -d '\r')
            echo "$info" | grep -q '^role:master' || echo "$info" | grep -q '^master_link_status:up' || return 1
        done
    }
    for _ in $(seq 1 300); do cluster_healthy && break; sleep 0.1; done
    cluster_healthy || { echo "the cluster never became healthy"; cat "$work/create.log"; exit 1; }
else
    "$redis_server" "${listen[@]}" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
    pids+=($!) redis_pids+=($!)
    wait_for_port "$port"
fi

# start_replica NAME [FLAGS...]: starts a replica (in this shell, so that
# the trap stops it) and waits until it listens.
start_replica() {
    "$target_dir/debug/examples/replica" 127.0.0.1:0 "${redis_flags[@]}" ${replica_tls[@]+"${replica_tls[@]}"} --db "$work/notes.db" "${@:2}" >"$work/$1.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 100); do
        grep -q 'listening on' "$work/$1.log" && break
        sleep 0.1
    done
}
# The replica's URL, from its log ("" if it never said).
url_of() {
    grep -o 'http://127\.0\.0\.1:[0-9]*' "$work/$1.log" | head -n1 || true
}
start_replica a
start_replica b
a=$(url_of a)
b=$(url_of b)
[ -n "$a" ] && [ -n "$b" ] || { cat "$work"/*.log; exit 1; }

# Clients reach every replica under one name, as through a load balancer.
host=(-H 'Host: notes.example')
# Replicas reach Redis in the background once started (a TLS handshake
# takes a while in a debug build): until then requests go to the handlers,
# as with Redis away. So the GET through a is repeated until its fill is
# stored (in the background), and the revalidation through b until b's
# cache answers it.
tag=""
for _ in $(seq 1 100); do
    tag=$(curl -s "${host[@]}" -o /dev/null -D - "$a/notes/1" | tr -d '\r' | awk -F': ' 'tolower($1) == "etag" {print $2}')
    sleep 0.05
    curl -s "$a/stats" | grep -q '"redis":{[^}]*"fills":[1-9]' && break
done
[ -n "$tag" ] || { echo "no ETag from replica a"; exit 1; }
curl -s "$a/stats" | grep -q '"redis":{[^}]*"fills":[1-9]' || { echo "replica a never stored its fill: $(curl -s "$a/stats")"; exit 1; }
hit="" b_stats=""
for _ in $(seq 1 100); do
    hit=$(curl -s "${host[@]}" -o /dev/null -w '%{http_code}' -H "If-None-Match: $tag" "$b/notes/1")
    b_stats=$(curl -s "$b/stats")
    echo "$b_stats" | grep -q '"redis":{"hits":[1-9]' && break
    sleep 0.05
done
put=$(curl -s "${host[@]}" -o /dev/null -w '%{http_code}' -X PUT --data 'Buy oat milk' "$b/notes/1")
after=$(curl -s "${host[@]}" -w ' %{http_code}' -H "If-None-Match: $tag" "$a/notes/1")

echo "$b_stats" | grep -q '"redis":{"hits":[1-9]' || { echo "expected replica b to hit without its handler: $b_stats"; exit 1; }
[ "$hit" = 304 ] || { echo "expected 304 from replica b, got $hit"; exit 1; }
[ "$put" = 204 ] || { echo "expected 204 from the PUT through b, got $put"; exit 1; }
[ "$after" = "Buy oat milk 200" ] || { echo "expected the new note from replica a, got: $after"; exit 1; }
echo "replicas ($mode): filled through a, 304 through b (b's handler not run), PUT through b $put, then through a: $after"

# Conditional writes across replicas: a PUT through a with a stale If-Match
# gets 412 with the current tag and changes nothing; one with the tag read
# through b gets 204 with the tag the next GET carries, on either replica.
status_and_tag() {
    tr -d '\r' | awk -F': ' 'NR == 1 {split($0, line, " "); status = line[2]} tolower($1) == "etag" {tag = $2} END {print status, tag}'
}
current=$(curl -s "${host[@]}" -o /dev/null -D - "$b/notes/1" | status_and_tag)
tag=${current#200 }
stale=$(curl -s "${host[@]}" -o /dev/null -D - -X PUT -H 'If-Match: "nope"' --data 'Lost update' "$a/notes/1" | status_and_tag)
kept=$(curl -s "${host[@]}" "$b/notes/1")
fresh=$(curl -s "${host[@]}" -o /dev/null -D - -X PUT -H "If-Match: $tag" --data 'Buy soy milk' "$a/notes/1" | status_and_tag)
new_tag=${fresh#204 }
next=$(curl -s "${host[@]}" -o /dev/null -D - "$b/notes/1" | status_and_tag)
written=$(curl -s "${host[@]}" "$b/notes/1")
[ "$current" = "200 $tag" ] && [ -n "$tag" ] || { echo "no ETag from replica b: $current"; exit 1; }
[ "$stale" = "412 $tag" ] || { echo "expected 412 with the current tag $tag for If-Match: \"nope\" through a, got: $stale"; exit 1; }
[ "$kept" = "Buy oat milk" ] || { echo "the refused PUT changed the note: $kept"; exit 1; }
[ "$fresh" = "204 $new_tag" ] && [ -n "$new_tag" ] && [ "$new_tag" != "$tag" ] || { echo "expected 204 with a new tag for If-Match: $tag through a, got: $fresh"; exit 1; }
[ "$next" = "200 $new_tag" ] && [ "$written" = "Buy soy milk" ] || { echo "expected the new note with $new_tag from replica b, got: $next, $written"; exit 1; }
echo "replicas ($mode): If-Match: \"nope\" through a $stale (note kept), If-Match: $tag through a $fresh, then through b: $written"

# Strict writes: Redis paused (SIGSTOP: connections stay open, nothing is
# answered), a PUT through the strict replica c is refused before its
# handler runs; a PUT through a (default writes) goes on.
start_replica c --strict
c=$(url_of c)
[ -n "$c" ] || { cat "$work"/c.log; exit 1; }
for _ in $(seq 1 100); do
    [ "$(curl -s "${host[@]}" -o /dev/null -w '%{http_code}' -X PUT --data 'Buy soy milk' "$c/notes/1")" = 204 ] && break
    sleep 0.05
done
kill -STOP "${redis_pids[@]}"
refused=$(curl -s "${host[@]}" -o /dev/null -D - -X PUT --data 'Refused' "$c/notes/1" | tr -d '\r' | awk -F': ' 'NR == 1 {split($0, line, " "); status = line[2]} tolower($1) == "retry-after" {after = $2} END {print status, after}')
read_c=$(curl -s "${host[@]}" -w ' %{http_code}' "$c/notes/1")
lenient=$(curl -s "${host[@]}" -o /dev/null -w '%{http_code}' -X PUT --data 'Buy rice milk' "$a/notes/1")
kill -CONT "${redis_pids[@]}"
accepted=""
for _ in $(seq 1 100); do
    accepted=$(curl -s "${host[@]}" -o /dev/null -w '%{http_code}' -X PUT --data 'Buy milk' "$c/notes/1")
    [ "$accepted" = 204 ] && break
    sleep 0.05
done
written=$(curl -s "${host[@]}" "$b/notes/1")
[ "$refused" = "503 1" ] || { echo "expected 503 with Retry-After: 1 from the strict replica while Redis is paused, got: $refused"; exit 1; }
[ "$read_c" = "Buy soy milk 200" ] || { echo "expected the note from the strict replica while Redis is paused, got: $read_c"; exit 1; }
[ "$lenient" = 204 ] || { echo "expected 204 from the default replica while Redis is paused, got $lenient"; exit 1; }
[ "$accepted" = 204 ] && [ "$written" = "Buy milk" ] || { echo "expected strict writes to resume, got $accepted, then: $written"; exit 1; }
echo "replicas ($mode): Redis paused: strict PUT $refused (Retry-After), GET through c $read_c, default PUT through a $lenient; Redis back: strict PUT $accepted"

[ "$mode" = cluster ] || exit 0

# Every shard fails over (CLUSTER FAILOVER on each replica: the promoted
# node has every write). Entries stored before are no longer trusted (a
# promoted replica may lack writes; the store cannot tell), so the next
# revalidation through b reaches its handler; then a fill through a is a
# hit through b again.
tag=$(curl -s "${host[@]}" -o /dev/null -D - "$a/notes/2" | tr -d '\r' | awk -F': ' 'tolower($1) == "etag" {print $2}')
for port in "${ports[@]}"; do
    "$redis_cli" -p "$port" info replication | tr -d '\r' | grep -q '^role:slave' && "$redis_cli" -p "$port" cluster failover >/dev/null
done
# (The old primaries turn into replicas of the new ones.)
for _ in $(seq 1 300); do
    masters=0
    for port in "${ports[@]}"; do
        "$redis_cli" -p "$port" info replication | tr -d '\r' | grep -q '^role:master' && masters=$((masters + 1))
    done
    [ "$masters" = 3 ] && cluster_healthy && break
    sleep 0.1
done
hits() { curl -s "$1/stats" | grep -o '"redis":{"hits":[0-9]*' | grep -o '[0-9]*$'; }
# (A 304 either way: b's ETag layer answers the unchanged note's tag with
# one. What tells a hit is whether b's cache counted it.)
before=$(hits "$b")
curl -s "${host[@]}" -o /dev/null -H "If-None-Match: $tag" "$b/notes/2"
missed=$(hits "$b")
resumed=""
for _ in $(seq 1 100); do
    tag=$(curl -s "${host[@]}" -o /dev/null -D - "$a/notes/2" | tr -d '\r' | awk -F': ' 'tolower($1) == "etag" {print $2}')
    sleep 0.05
    curl -s "${host[@]}" -o /dev/null -H "If-None-Match: $tag" "$b/notes/2"
    resumed=$(hits "$b")
    [ "$resumed" -gt "$missed" ] && break
done
[ "$missed" = "$before" ] || { echo "expected no hit through b right after the failovers: hits $before, then $missed"; exit 1; }
[ "$resumed" -gt "$missed" ] || { echo "expected hits to resume after the failovers: $(curl -s "$b/stats")"; exit 1; }
echo "replicas ($mode): every shard failed over: the revalidation through b went to its handler (old entries not trusted); after a fill through a, a hit through b again (b's hits $before, $missed, $resumed)"
