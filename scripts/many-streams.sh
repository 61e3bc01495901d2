#!/usr/bin/env bash
# Four cameras in one nalcast against four nalcast processes of one camera each:
# STREAMS × VIEWERS viewers either way, the same clip as every stream's file source
# (no encoder in the figures), and nalcast's CPU and memory side by side (summed
# over the four processes). Prints a Markdown section; `make bench` (scripts/bench.sh)
# adds it to its results.
#   scripts/many-streams.sh CLIP [DURATION_S] [VIEWERS_PER_STREAM]
set -euo pipefail
cd "$(dirname "$0")/.."

clip=${1:?usage: scripts/many-streams.sh CLIP [DURATION_S] [VIEWERS_PER_STREAM]}
duration=${2:-20}
viewers=${3:-250}
streams=4
NALCAST=target/release/nalcast
BENCH=target/release/nalcast-bench
raw=$(mktemp -d /tmp/nalcast-many-streams.XXXXXX)
hz=$(getconf CLK_TCK)
base_port=18600
# The load generator at idle priority, as in bench.sh: it gets what nalcast leaves.
idle=()
if chrt --idle 0 true 2>/dev/null; then idle=(chrt --idle 0); fi
ulimit -n 65536 2>/dev/null || true

pids=()
stop_all() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
}
trap 'stop_all; rm -rf "$raw"' EXIT

source scripts/lib/healthy.sh
wait_healthy() { # port
    healthy "http://127.0.0.1:$1" "many-streams: nalcast on port $1"
}

limits=(--legacy-listen off --max-viewers 5000 --max-viewers-per-ip 5000 --fps 30)
ticks() { # pids...: user + system CPU ticks, summed
    local sum=0
    for p in "$@"; do sum=$((sum + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
    echo "$sum"
}
rss_mib() { # pids...: resident memory, summed
    local sum=0
    for p in "$@"; do sum=$((sum + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status"))); done
    awk -v k="$sum" 'BEGIN {printf "%.1f", k / 1024}'
}

# One setup: URLS (one per stream) already served by PIDS; STREAMS load generators
# of VIEWERS each; nalcast's CPU over the middle of the run, its memory at the end
# of that window, and what the viewers got.
measure() { # label, then urls
    local label=$1
    shift
    local benches=() i=0
    for url in "$@"; do
        "${idle[@]}" "$BENCH" --name "$label-$i" --url "$url" --viewers "$viewers" --ramp 2 \
            --duration "$duration" --json "$raw/$label-$i.json" >/dev/null 2>&1 &
        benches+=($!)
        i=$((i + 1))
    done
    # Everyone has joined after the ramp; count a window well inside the run.
    sleep 3
    local window=$((duration - 4))
    local t0 c0 c1 rss
    t0=$(date +%s.%N)
    c0=$(ticks "${pids[@]}")
    sleep "$window"
    c1=$(ticks "${pids[@]}")
    rss=$(rss_mib "${pids[@]}")
    local elapsed
    elapsed=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {print b - a}')
    for b in "${benches[@]}"; do wait "$b" || true; done
    local cpu
    cpu=$(awk -v c=$((c1 - c0)) -v hz="$hz" -v s="$elapsed" 'BEGIN {printf "%.1f", 100 * c / hz / s}')
    # What the viewers got, over every load generator's summary.
    local got
    got=$(python3 - "$raw" "$label" <<'EOF'
import glob, json, sys
raw, label = sys.argv[1], sys.argv[2]
runs = [json.load(open(p))["summary"] for p in sorted(glob.glob(f"{raw}/{label}-*.json"))]
started = sum(r["started"] for r in runs)
full = sum(r["share_at_95pct_fps"] * r["started"] for r in runs) / max(started, 1)
lost = sum(r["lost"] for r in runs)
errors = sum(r["errors"] for r in runs)
print(f"{started} | {errors} | {100 * full:.1f}% | {lost}")
EOF
)
    echo "| $label | ${#pids[@]} | $# × $viewers | $cpu | $rss | $got |"
}

echo "## Many streams: one process or one per stream"
echo
echo "Command: \`scripts/many-streams.sh CLIP $duration $viewers\` (run by \`make bench\`): $streams streams × $viewers viewers of the same 720p clip (file source, so no encoder runs), ${duration} s, viewers joining over 2 s; nalcast's CPU (user + system, % of one core) over the middle $((duration - 4)) s and its resident memory at the end of that window, summed over its processes."
echo
echo "| setup | nalcast processes | viewers | nalcast CPU % | nalcast RSS MiB | viewers started | errors | viewers at ≥ 95 % fps | frames lost |"
echo "|---|---|---|---|---|---|---|---|---|"

# One process, four named streams.
args=()
urls=()
for i in $(seq 1 $streams); do
    args+=(--stream "cam$i=file:$clip")
    urls+=("ws://127.0.0.1:$base_port/streams/cam$i/ws")
done
"$NALCAST" --listen "127.0.0.1:$base_port" "${limits[@]}" "${args[@]}" >"$raw/one.log" 2>&1 &
pids=($!)
wait_healthy "$base_port"
measure "one process" "${urls[@]}"
stop_all

# Four processes, one stream each.
urls=()
for i in $(seq 1 $streams); do
    port=$((base_port + i))
    "$NALCAST" --listen "127.0.0.1:$port" "${limits[@]}" --source "file:$clip" >"$raw/p$i.log" 2>&1 &
    pids+=($!)
    urls+=("ws://127.0.0.1:$port/ws")
done
for i in $(seq 1 $streams); do wait_healthy $((base_port + i)); done
measure "a process per stream" "${urls[@]}"
stop_all
echo
