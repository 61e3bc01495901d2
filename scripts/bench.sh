#!/usr/bin/env bash
# Standard benchmark scenarios against the release binary (see README "Benchmarks").
# Writes bench/results/<date>.md (committed) and raw JSON beside it (ignored).
#   BENCH_QUICK=1 scripts/bench.sh   shorter runs, for a smoke check
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/healthy.sh

cargo build --release --quiet -p nalcast -p nalcast-bench
NALCAST=target/release/nalcast
BENCH=target/release/nalcast-bench
FLOOR=target/release/nalcast-floor
HLS_LOAD=target/release/nalcast-hls-load
# The load generator stands in for viewers on other machines: at idle priority it
# gets only the CPU nalcast leaves, instead of preempting nalcast in the middle of
# a fan-out. (Two scenarios are repeated at normal priority, for comparison.)
idle=()
if chrt --idle 0 true 2>/dev/null; then idle=(chrt --idle 0); fi
day=$(date -u +%Y-%m-%d)
# A second run on one day is DAY-2 (and so on): every run stays in the chart's history.
run_name=$day
for n in $(seq 2 99); do
    [[ -e bench/results/$run_name.md ]] || break
    run_name=$day-$n
done
out=bench/results/$run_name.md
raw=bench/results/$run_name
mkdir -p "$raw"
quick=${BENCH_QUICK:-0}
long() { if [[ $quick == 1 ]]; then echo "$1"; else echo "$2"; fi; }
ulimit -n 65536 2>/dev/null || true

port=18080
server_pid=""
server_cpu=() # a taskset prefix for nalcast in the pinned scenarios
# Plain HTTP, or TLS (--tls self-signed): the path browsers on a LAN take to
# WebCodecs. The certificate is made once in $tls_dir and pinned by the load generator.
tls_dir=$raw/tls-data
scheme=http
launch() { # http|https, then nalcast args
    stop
    scheme=$1
    shift
    local tls=()
    [[ $scheme == https ]] && tls=(--tls self-signed --data-dir "$tls_dir")
    # Every load-generator viewer comes from 127.0.0.1: lift the per-address limit.
    "${server_cpu[@]}" "$NALCAST" --listen 127.0.0.1:$port --legacy-listen off --max-viewers 5000 --max-viewers-per-ip 5000 \
        "${tls[@]}" "$@" > "$raw/server.log" 2>&1 &
    server_pid=$!
    healthy "$scheme://127.0.0.1:$port" "bench: nalcast ($scheme)"
}
start() { launch http "$@"; }
start_tls() { launch https "$@"; }
stop() { stop_server server_pid; }
trap stop EXIT

run() { # name, then nalcast-bench args; ws:// or wss:// as the server was started
    local name=$1
    shift
    local ws=ws tls=()
    if [[ $scheme == https ]]; then ws=wss tls=(--ca "$tls_dir/tls/self-signed.crt"); fi
    echo "bench: $name" >&2
    "${prio[@]}" "$BENCH" --name "$name" --url "$ws://127.0.0.1:$port/ws" "${tls[@]}" --pid "$server_pid" \
        --metrics "$scheme://127.0.0.1:$port/metrics" --json "$raw/$name.json" "$@" | tail -n 3
}

{
    echo "# nalcast benchmarks, $run_name"
    echo
    echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); load generator on the same machine, loopback, at ${idle[*]:-normal} priority unless noted."
    echo "Command: \`make bench\` (scripts/bench.sh). Source: test pattern 1280x720, 30 fps, 3 Mbit/s unless noted."
    echo

    # A fresh server per scenario, so memory figures are its own.
    prio=("${idle[@]}")
    test_source=(--source test --keyframe-interval 60)
    start "${test_source[@]}"
    run ttff --viewers 20 --ramp 4 --duration 2
    start "${test_source[@]}"
    run fanout-100 --viewers 100 --duration "$(long 5 20)"
    start "${test_source[@]}"
    run fanout-500 --viewers 500 --duration "$(long 5 20)"
    start "${test_source[@]}"
    run fanout-1000 --viewers 1000 --duration "$(long 5 20)"
    start "${test_source[@]}"
    run isolation --viewers 75 --stalled 25 --duration "$(long 10 60)"
    # WSS against plain at 100, 200 and 1000 viewers (fanout-100 and fanout-1000 above
    # are the plain ones at 100 and 1000).
    start "${test_source[@]}"
    run fanout-200 --viewers 200 --duration "$(long 5 20)"
    start_tls "${test_source[@]}"
    run wss-fanout-100 --viewers 100 --duration "$(long 5 20)"
    start_tls "${test_source[@]}"
    run wss-fanout-200 --viewers 200 --duration "$(long 5 20)"
    start_tls "${test_source[@]}"
    run wss-fanout-1000 --viewers 1000 --duration "$(long 5 20)"
    start "${test_source[@]}"

    # The same stream as a file source: record 10 s of /ws/raw, then play it back.
    clip=$raw/clip.h264
    "$BENCH" --url "ws://127.0.0.1:$port/ws/raw" --dialect raw --duration 10 --record "$clip" >/dev/null
    start --source "file:$clip" --fps 30
    run file-fanout-100 --viewers 100 --duration "$(long 5 20)"
    # The server's own fan-out cost, without the test source's encoder.
    start --source "file:$clip" --fps 30
    run file-fanout-1000 --viewers 1000 --duration "$(long 5 20)"
    # WSS against plain at 1000 with a core each: unpinned, the load generator
    # decrypting 1000 streams beside nalcast saturates both cores and takes the CPU
    # nalcast would use. Pinned, nalcast's figure is its own (the generator's core
    # may still fall behind with TLS: see its lost frames and fps).
    if taskset -c 1 true 2>/dev/null; then
        server_cpu=(taskset -c 0)
        prio=(taskset -c 1)
        start --source "file:$clip" --fps 30
        run pinned-file-fanout-1000 --viewers 1000 --duration "$(long 5 20)"
        start_tls --source "file:$clip" --fps 30
        run pinned-wss-file-fanout-1000 --viewers 1000 --duration "$(long 5 20)"
        server_cpu=()
        prio=("${idle[@]}")
    fi
    # The load generator competing with nalcast for the two cores.
    prio=()
    start "${test_source[@]}"
    run fanout-100-normal-priority --viewers 100 --duration "$(long 5 20)"
    start "${test_source[@]}"
    run fanout-1000-normal-priority --viewers 1000 --duration "$(long 5 20)"
    stop
    # Four streams of 250 viewers: one process against four (a section of its own,
    # after the scenario table).
    echo
    scripts/many-streams.sh "$clip" "$(long 8 20)" 250
    scripts/stills-bench.sh "$(long 5 20)"
} | sed -n '/^|/p;/^#/p;/^Machine/p;/^Command/p;/^$/p' |
    # Each run prints the table's header (nalcast-bench's own) above its row: keep the first.
    awk '!/^\| scenario|^\|---/ || !seen[$0]++' > "$out.tmp"

# What the kernel alone needs for the same fan-outs.
floor100=$("$FLOOR" --connections 100 --duration "$(long 5 20)")
floor1000=$("$FLOOR" --connections 1000 --duration "$(long 5 20)")

# Glass-to-glass and the test source's own cost.
start --source test
idle_cpu=$(awk '{print $14+$15}' /proc/$server_pid/stat)
sleep "$(long 5 20)"
idle_cpu2=$(awk '{print $14+$15}' /proc/$server_pid/stat)
secs=$(long 5 20)
source_pct=$(awk -v a="$idle_cpu" -v b="$idle_cpu2" -v s="$secs" 'BEGIN {printf "%.1f", (b-a)/100/s*100}')
glass=$(cd web && node bench/glass.mjs "http://127.0.0.1:$port/" "$(long 8 20)")
stop

# WebRTC on a plain-HTTP LAN name against WebCodecs on a secure page, one Chromium
# (its own nalcast and Chromium in a network namespace: needs root).
webrtc_glass=$(cd web && NALCAST_BIN="$NALCAST" node bench/webrtc-glass.mjs "$(long 3 6)" "$(long 6 12)" 2>&1) \
    || webrtc_glass="not measured: $webrtc_glass"
# 100 WebRTC viewers against 100 wss:// ones, pinned, on the clip recorded above.
webrtc_load=$(scripts/webrtc-load.sh "$NALCAST" "$BENCH" "${BENCH%/*}/nalcast-whep-load" "$raw/clip.h264" "$(long 5 20)" 100 2>&1) \
    || webrtc_load="## WebRTC viewers against wss:// viewers: not measured: $webrtc_load"
webrtc_camera=$(cd web && CAMERA=1 NALCAST_BIN="$NALCAST" node bench/webrtc-glass.mjs "$(long 3 6)" "$(long 3 6)" 2>&1) \
    || webrtc_camera="not measured: $webrtc_camera"

# LL-HLS behind real HTTP caches: does nalcast's work stay flat as clients grow?
hls_cache=$(
    HEADER=1 CACHE=nginx scripts/hls-cache.sh "$NALCAST" "$HLS_LOAD" "$(long 5 20)" 10 100 300
    CACHE=varnish scripts/hls-cache.sh "$NALCAST" "$HLS_LOAD" "$(long 5 20)" 10 100 300
)

# Joins over shaped links (20 and 5 Mbit/s) in a network namespace of their own, with
# a camera-like source that makes no keyframe on demand; one line instead when the
# machine cannot make namespaces (not root).
slow_links=$(SLOW_JOINS=$(long 6 20) SLOW_OUT="$raw/slow-link" scripts/slow-link.sh "$NALCAST" "$BENCH")

{
    cat "$out.tmp"
    echo
    echo "## Glass-to-glass (test source 1280x720 30 fps, headless Chromium, same machine)"
    echo
    echo "| decoder (played by) | first picture ms | samples | p50 ms | p95 ms | max ms | fps | dropped |"
    echo "|---|---|---|---|---|---|---|---|"
    echo "$glass" | while read -r line; do
        node -e 'const j = JSON.parse(process.argv[1]); console.log(`| ${j.decoder} (${j.played_by}) | ${j.first_picture_ms} | ${j.samples} | ${j.p50_ms} | ${j.p95_ms} | ${j.max_ms} | ${j.fps} | ${j.framesDropped} |`)' "$line"
    done
    echo
    echo "## WebRTC against WebCodecs (web/bench/webrtc-glass.mjs, test source 1280x720 30 fps, one headless Chromium)"
    echo
    echo "WebCodecs on a secure page (http://127.0.0.1), WebRTC on a plain-HTTP LAN name (camera.lan), each page opened afresh per round, order alternating. First live picture: the first whose stamp is at most 200 ms old, after navigation. Targets (issue 31): WebRTC p95 ≤ 1.1× WebCodecs' p95; its first live picture ≤ 300 ms."
    echo
    echo "With a camera that cannot make keyframes (a keyframe every 2 s), the target is the wait for its next keyframe + 150 ms: \"over keyframe wait\" is the first live picture's time less that wait (the first picture's time less its age)."
    echo
    echo "| source | path (played by) | rounds | first picture ms (median) | first live picture ms (median, max) | over keyframe wait ms (max) | samples | p50 ms | p95 ms | dropped per round |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    echo "$webrtc_glass"$'\n'"$webrtc_camera" | while read -r line; do
        node -e 'let j; try { j = JSON.parse(process.argv[1]); } catch { console.log(`| ${process.argv[1]} |`); process.exit(0); } console.log(`| ${j.source} | ${j.path} (${j.played_by}) | ${j.rounds} | ${j.first_picture_ms_median} | ${j.first_live_picture_ms_median}, ${j.first_live_picture_ms_max} | ${j.first_live_over_keyframe_wait_ms_max ?? "-"} | ${j.samples} | ${j.p50_ms} | ${j.p95_ms} | ${j.dropped_per_round_median} |`)' "$line"
    done
    echo
    echo "$webrtc_load"
    echo
    echo "## LL-HLS behind an HTTP cache (scripts/hls-cache.sh, test source 1280x720 30 fps, parts of 0.2 s)"
    echo
    echo "Lateness: when a client had a part, minus the wall-clock end of its last picture (EXT-X-PROGRAM-DATE-TIME); \"2 parts\" = 0.4 s. nalcast requests: from its /metrics (nalcast_hls_requests_total) over the run."
    echo
    echo "$hls_cache"
    echo
    if [[ $slow_links != "## "* ]]; then
        echo "## Slow links"
        echo
    fi
    echo "$slow_links"
    echo
    echo "## Kernel floor"
    echo
    echo "The same fan-outs with nothing but plain blocking writes of 12500 bytes per connection per frame at 30 fps, one writer thread per core, reader at idle priority (\`nalcast-floor\`): no server can add less than this here."
    echo
    echo "- $floor100"
    echo "- $floor1000"
    echo
    echo "## Server-added delay against the kernel floor"
    echo
    echo "nalcast's server-added delay (steady p99, from its /metrics histogram, so the upper bound of a bucket, at most 17 % above the true figure from 2 to 25 ms) over nalcast-floor's p99 for the same number of connections, both measured in this run. Target (issue 17): ≤ 1.5×."
    echo
    echo "| scenario | viewers | nalcast p99 ms (≤) | floor p99 ms | ratio | ≤ 1.5× |"
    echo "|---|---|---|---|---|---|"
    for pair in fanout-100:100 file-fanout-100:100 wss-fanout-100:100 fanout-1000:1000 file-fanout-1000:1000 wss-fanout-1000:1000; do
        name=${pair%%:*}
        n=${pair##*:}
        floor_line=$floor100
        [[ $n == 1000 ]] && floor_line=$floor1000
        python3 - "$raw/$name.json" "$floor_line" "$name" "$n" <<'PY'
import json, re, sys
path, floor_line, name, n = sys.argv[1:]
try:
    ours = json.load(open(path))["summary"]["server_latency_ms"][1]
except (OSError, KeyError, IndexError, TypeError, ValueError):
    ours = None
m = re.search(r"p99 ([0-9.]+)", floor_line)
floor = float(m.group(1)) if m else None
if ours is None or not floor:
    print(f"| {name} | {n} | {ours if ours is not None else '–'} | {floor or '–'} | – | – |")
else:
    ratio = ours / floor
    print(f"| {name} | {n} | {ours:g} | {floor:g} | {ratio:.2f} | {'yes' if ratio <= 1.5 else 'no'} |")
PY
    done
    echo
    echo "## WSS against plain WebSocket"
    echo
    echo "nalcast's mean CPU with the same viewers over wss:// (TLS 1.3 with the cipher nalcast picks, AES-128-GCM on a CPU with AES instructions; the load generator pinning the self-signed certificate) and over ws://, same run. Target (issue 17): ≤ 1.5× at 1000 viewers."
    echo
    echo "| viewers | ws:// CPU % | wss:// CPU % | ratio |"
    echo "|---|---|---|---|"
    for pair in fanout-100:wss-fanout-100 fanout-200:wss-fanout-200 fanout-1000:wss-fanout-1000 pinned-file-fanout-1000:pinned-wss-file-fanout-1000; do
        python3 - "$raw/${pair%%:*}.json" "$raw/${pair##*:}.json" <<'PY'
import json, sys
def cpu(path):
    try:
        s = json.load(open(path))["summary"]
        return s["viewers"], s["cpu_pct"][0]
    except (OSError, KeyError, IndexError, TypeError, ValueError):
        return None, None
n, plain = cpu(sys.argv[1])
_, tls = cpu(sys.argv[2])
ratio = f"{tls / plain:.2f}" if plain and tls else "–"
how = ", pinned: nalcast on core 0, load generator on core 1, file source" if "pinned" in sys.argv[1] else ""
fmt = lambda x: f"{x:.1f}" if x is not None else "–"
print(f"| {n or '–'}{how} | {fmt(plain)} | {fmt(tls)} | {ratio} |")
PY
    done
    echo
    echo "## Test source cost"
    echo
    echo "nalcast with the test source at 1280x720 30 fps 3 Mbit/s and no viewers: $source_pct % of one core (from /proc/PID/stat over $secs s)."
} > "$out"
rm -f "$out.tmp"
# The key figures of every committed run (and this one) as one chart (README).
node web/bench/chart.mjs bench/results > bench/results/chart.svg
echo "bench: wrote $out and bench/results/chart.svg"
cat "$out"
