#!/usr/bin/env bash
# Two replicas of the axum example behind nginx as a caching reverse proxy.
#
# The tag is a pure function of the bytes, so a cached copy fetched from one
# replica is revalidated by any other: once the cached entry is stale, nginx
# (proxy_cache_revalidate on) sends If-None-Match to the next replica, gets a
# 304, and serves its stored copy ($upstream_cache_status = REVALIDATED). The
# replicas send no Last-Modified, so the tag is the only validator nginx has.
# Checks that every revalidation is answered 304 by the replica it reached,
# that both replicas are reached, and that every client gets the full, correct
# body.
#
#   bash tests/shared_cache.sh        # needs nginx (Debian: nginx-light) and curl
#
# Loopback only; stops by itself in a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

nginx=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$nginx" ] || { echo "nginx is not installed" >&2; exit 1; }

cargo build --example axum --locked --quiet
target_dir=$(cargo metadata --no-deps --format-version 1 | grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Two separately started replicas on free ports.
replicas=()
for i in 1 2; do
    "$target_dir/debug/examples/axum" 127.0.0.1:0 >"$work/replica$i.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 100); do
        grep -q 'listening on' "$work/replica$i.log" && break
        sleep 0.1
    done
    replicas+=("$(grep -o '127\.0\.0\.1:[0-9]*' "$work/replica$i.log" | head -n1)")
done
echo "replicas: ${replicas[*]}"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$work/cache" "$work/tmp"
cat >"$work/nginx.conf" <<EOF
daemon off;
master_process off;
pid $work/nginx.pid;
events { worker_connections 64; }
http {
    client_body_temp_path $work/tmp/body;
    proxy_temp_path $work/tmp/proxy;
    fastcgi_temp_path $work/tmp/fastcgi;
    uwsgi_temp_path $work/tmp/uwsgi;
    scgi_temp_path $work/tmp/scgi;

    log_format cache '\$request_method \$uri \$status cache=\$upstream_cache_status upstream=\$upstream_addr upstream_status=\$upstream_status';
    access_log $work/access.log cache;

    upstream replicas {
        server ${replicas[0]};
        server ${replicas[1]};
    }
    proxy_cache_path $work/cache keys_zone=pages:1m;

    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://replicas;
            proxy_http_version 1.1;
            proxy_cache pages;
            # The replicas allow 10 s of freshness; one second keeps this
            # script short.
            proxy_ignore_headers Cache-Control Expires;
            proxy_cache_valid 200 1s;
            # Stale entries are revalidated with If-None-Match instead of
            # being fetched again.
            proxy_cache_revalidate on;
        }
    }
}
EOF
"$nginx" -e "$work/error.log" -p "$work" -c "$work/nginx.conf" &
pids+=($!)
for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null && break
    sleep 0.1
done
# That probe was the first fill of the cache; start from a clean log, once
# the entry is stale (nginx counts validity in whole seconds, hence 2.1 s).
sleep 2.1
: >"$work/access.log"

expected=$(curl -s "http://${replicas[0]}/" | sha256sum)
[ "$expected" = "$(curl -s "http://${replicas[1]}/" | sha256sum)" ] || { echo "the replicas differ" >&2; exit 1; }

fetch() {
    local got
    got=$(curl -s -w '%{http_code}' -o "$work/body" "http://127.0.0.1:$port/")
    [ "$got" = 200 ] || { echo "client got $got" >&2; exit 1; }
    [ "$(sha256sum <"$work/body")" = "$expected" ] || { echo "client got a wrong body" >&2; exit 1; }
}

# The entry is stale: revalidate it, several times, waiting for it to go
# stale in between, so the round robin reaches both replicas.
for _ in 1 2 3; do
    fetch   # stale: revalidated against the next replica
    fetch   # fresh again: a hit
    sleep 2.1
done

# A client of the cache revalidating its own copy gets a 304 from nginx (the
# stale entry is revalidated first, as above).
tag=$(curl -s -D - -o /dev/null "http://127.0.0.1:$port/" | tr -d '\r' | grep -i '^etag:' | cut -d' ' -f2)
client=$(curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: $tag" "http://127.0.0.1:$port/")

echo "nginx access log:"
sed 's/^/  /' "$work/access.log"

revalidated=$(grep -c 'cache=REVALIDATED' "$work/access.log" || true)
bad=$(grep 'cache=REVALIDATED' "$work/access.log" | grep -vc 'upstream_status=304' || true)
fetched=$(grep -Ec 'cache=(MISS|EXPIRED)' "$work/access.log" || true)
reached=0
for replica in "${replicas[@]}"; do
    grep 'cache=REVALIDATED' "$work/access.log" | grep -q "upstream=$replica " && reached=$((reached + 1))
done

echo "revalidated: $revalidated (all answered 304: $([ "$bad" = 0 ] && echo yes || echo no)), refetched: $fetched, replicas reached: $reached of 2, client revalidation: $client"
[ "$revalidated" -ge 3 ] && [ "$bad" = 0 ] && [ "$fetched" = 0 ] && [ "$reached" = 2 ] && [ "$client" = 304 ] \
    || { echo "FAILED" >&2; cat "$work/error.log" >&2; exit 1; }
echo "shared cache: ok"
