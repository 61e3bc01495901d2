#!/usr/bin/env bash
# LL-HLS behind a real HTTP cache (docs/scale-out.md): nalcast on the test pattern,
# a cache in front (CACHE=nginx: proxy_cache with proxy_cache_lock; CACHE=varnish:
# its request coalescing; both keep nalcast's own Cache-Control), and
# nalcast-hls-load's clients on the cache. For each client count it
# prints what the clients saw (how late each part arrived) and what nalcast
# answered (requests per playlist version, from its /metrics): with the cache,
# nalcast's work must not grow with the number of clients.
#   scripts/hls-cache.sh NALCAST LOAD SECONDS CLIENTS...
#   CACHE=nginx|varnish (default nginx)
# Prints markdown table rows (the header with HEADER=1). Needs the cache's Debian package (nginx or varnish: scripts/setup.sh --test).
set -euo pipefail
cache=${CACHE:-nginx}

nalcast=$1
load=$2
seconds=$3
shift 3

daemon=$([[ $cache == varnish ]] && echo varnishd || echo nginx)
if ! command -v "$daemon" >/dev/null; then
    echo "hls-cache: $daemon is not installed (scripts/setup.sh --test installs it)" >&2
    exit 1
fi
dir=$(mktemp -d /tmp/nalcast-hls-cache.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up_port=$(free_port)
cache_port=$(free_port)

"$nalcast" --source test --listen "127.0.0.1:$up_port" --legacy-listen off >"$dir/nalcast.log" 2>&1 &
pids+=($!)

start_nginx() {
mkdir -p "$dir/cache" "$dir/temp"
cat >"$dir/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 8192;
error_log $dir/error.log warn;
pid $dir/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/temp;
    proxy_temp_path $dir/temp;
    fastcgi_temp_path $dir/temp;
    uwsgi_temp_path $dir/temp;
    scgi_temp_path $dir/temp;
    proxy_cache_path $dir/cache levels=1:2 keys_zone=hls:16m max_size=256m inactive=2m use_temp_path=off;
    upstream nalcast { server 127.0.0.1:$up_port; keepalive 32; }
    server {
        listen 127.0.0.1:$cache_port;
        location /hls/ {
            proxy_pass http://nalcast;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # nalcast answers only host names it serves (its DNS rebinding defence):
            # pass the one the client asked for (and --public-host it if it is a name).
            proxy_set_header Host \$host;
            proxy_cache hls;
            # One request per URL goes to nalcast; the others wait for its answer.
            proxy_cache_lock on;
            proxy_cache_lock_timeout 15s;
            proxy_cache_lock_age 15s;
            # Blocking reloads and preload hints are held up to 12 s by nalcast.
            proxy_read_timeout 20s;
            # The query (_HLS_msn, _HLS_part) is part of the key: one entry per version.
            proxy_cache_key \$uri\$is_args\$args;
            add_header X-Cache \$upstream_cache_status;
        }
    }
}
EOF
nginx -c "$dir/nginx.conf" -p "$dir" &
pids+=($!)
}

start_varnish() {
cat >"$dir/nalcast.vcl" <<EOF
vcl 4.1;
backend nalcast {
    .host = "127.0.0.1";
    .port = "$up_port";
    # Blocking reloads and preload hints are held up to 12 s by nalcast.
    .first_byte_timeout = 20s;
    .between_bytes_timeout = 20s;
}
sub vcl_recv {
    if (req.url !~ "^/hls/") { return (pass); }
    # Requests for the same URL wait for the first one's answer (Varnish's waiting
    # list), woken the moment it arrives.
    return (hash);
}
sub vcl_backend_response {
    # A playlist is never served stale: a client that asked for a version gets it.
    set beresp.grace = 0s;
}
EOF
varnishd -F -j none -n "$dir/varnish" -a "127.0.0.1:$cache_port" -f "$dir/nalcast.vcl" -s malloc,128m \
    -p thread_pool_min=50 -p thread_pool_max=2000 >"$dir/varnish.log" 2>&1 &
pids+=($!)
}

"start_$cache"

url_up="http://127.0.0.1:$up_port"
for _ in $(seq 100); do
    if curl -fs "$url_up/hls/index.m3u8?_HLS_msn=1" -o /dev/null && curl -fs "http://127.0.0.1:$cache_port/hls/index.m3u8" -o /dev/null; then
        break
    fi
    sleep 0.1
done

# nalcast's HLS requests and playlist versions so far.
counts() {
    curl -fs "$url_up/metrics" | awk '
        /^nalcast_hls_requests_total\{/ { r += $2 }
        /^nalcast_hls_playlist_versions_total[{ ]/ { v += $2 }
        END { printf "%d %d\n", r, v }'
}

[[ ${HEADER:-0} == 1 ]] && echo "| cache | clients | parts fetched | lateness p50 / p95 / p99 / max ms | clients with p95 <= 2 parts | nalcast requests | playlist versions | nalcast requests per version | client requests per nalcast request | errors |"
[[ ${HEADER:-0} == 1 ]] && echo "|---|---|---|---|---|---|---|---|---|---|"
for clients in "$@"; do
    read -r r0 v0 < <(counts)
    out=$("$load" --url "http://127.0.0.1:$cache_port/hls/index.m3u8" --clients "$clients" --duration "$seconds")
    read -r r1 v1 < <(counts)
    echo "$out" >"$dir/load-$clients.json"
    node -e '
        const [j, r, v] = [JSON.parse(process.argv[1]), Number(process.argv[2]), Number(process.argv[3])];
        const l = j.lateness_ms;
        console.log(`| ${process.argv[4]} | ${j.clients} | ${j.parts_fetched} | ${l.p50} / ${l.p95} / ${l.p99} / ${l.max} | ${j.clients_p95_within_2_parts} of ${j.clients} | ${r} | ${v} | ${(r / v).toFixed(2)} | ${(j.requests / r).toFixed(1)} | ${j.errors}${j.first_error ? ` (${j.first_error})` : ""} |`);
    ' "$out" "$((r1 - r0))" "$((v1 - v0))" "$cache"
done
