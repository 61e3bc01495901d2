#!/usr/bin/env bash
# Soak test (not in CI): nalcast fed by a live camera stand-in that is killed every
# few minutes, with viewer churn and stalled viewers; samples RSS, fds, threads and
# frame counts every minute and writes a table and a plot.
#   SOAK_MINUTES=10 scripts/soak.sh     (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${SOAK_MINUTES:-10}
cargo build --release --quiet -p nalcast -p nalcast-bench
NALCAST=$PWD/target/release/nalcast
BENCH=$PWD/target/release/nalcast-bench
day=$(date -u +%Y-%m-%d)
out=bench/results/soak-$day.md
work=$(mktemp -d)
camera_port=18180
port=18181
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

# The "camera": a second nalcast on its test pattern; the source under test reads its
# raw stream through nalcast-bench --record -, a child process we can kill.
"$NALCAST" --listen 127.0.0.1:$camera_port --legacy-listen off --source test > "$work/camera.log" 2>&1 &
pids+=($!)
sleep 1
"$NALCAST" --listen 127.0.0.1:$port --legacy-listen off --stall-timeout 3 \
    --source "exec:$BENCH --url ws://127.0.0.1:$camera_port/ws/raw --dialect raw --duration 100000 --record -" \
    > "$work/server.log" 2>&1 &
server=$!
pids+=($server)
for _ in $(seq 100); do curl -sf http://127.0.0.1:$port/healthz >/dev/null && break; sleep 0.1; done

sample() {
    local rss fds threads api
    rss=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' /proc/$server/status)
    fds=$(ls /proc/$server/fd | wc -l)
    threads=$(awk '/Threads/ {print $2}' /proc/$server/status)
    api=$(curl -s http://127.0.0.1:$port/api/stream)
    frames=$(echo "$api" | sed -n 's/.*"frames_in":\([0-9]*\).*/\1/p')
    viewers=$(echo "$api" | sed -n 's/.*"viewers":\([0-9]*\).*/\1/p')
    restarts=$(curl -s http://127.0.0.1:$port/metrics | awk '/^nalcast_source_restarts_total/ {print $2}')
    echo "| $1 | $rss | $fds | $threads | $frames | $viewers | ${restarts:-0} |"
}

{
    echo "# nalcast soak run, $day"
    echo
    echo "$minutes minutes; every minute: 20 viewers for 50 s plus 5 stalled ones (churn); every 3 minutes the camera process is killed (SIGKILL). \`SOAK_MINUTES=$minutes make soak\`."
    echo
    echo "| minute | RSS MiB | fds | threads | frames in | viewers now | source restarts |"
    echo "|---|---|---|---|---|---|---|"
    sample 0
} > "$out.tmp"
for m in $(seq 1 "$minutes"); do
    "$BENCH" --url ws://127.0.0.1:$port/ws --viewers 20 --stalled 5 --duration 50 --ramp 5 > "$work/churn-$m.txt" 2>&1 &
    if (( m % 3 == 0 )); then
        # Only the relay itself: the server's own command line mentions it too.
        pkill -KILL -f -- "^$BENCH --url ws://127.0.0.1:$camera_port" || true
    fi
    # Sampled mid-batch, while the viewers are connected.
    sleep 30
    sample "$m" >> "$out.tmp"
    sleep 30
    echo "soak: minute $m/$minutes" >&2
done
{
    cat "$out.tmp"
    echo
    echo '```'
    echo "RSS MiB by minute (each # = 2 MiB)"
    awk -F'|' 'NR>6 && $3+0>0 {printf "%3d %6.1f ", $2, $3; for (i=0; i<$3/2; i++) printf "#"; printf "\n"}' "$out.tmp"
    echo '```'
} > "$out"
rm -f "$out.tmp"
echo "soak: wrote $out"
cat "$out"
