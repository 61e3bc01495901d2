#!/usr/bin/env bash
# Snapshots and MJPEG: what a still costs. Snapshot latency (request to last byte)
# p50/p95 for a new picture each time, and nalcast's CPU with one MJPEG viewer of a
# 640x360 stream at 10 fps against none (A/B in one run), with the Raspberry Pi
# estimate of docs/raspberry-pi.md. Prints a Markdown section; `make bench`
# (scripts/bench.sh) adds it to its results.
#   scripts/stills-bench.sh [DURATION_S]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/healthy.sh

duration=${1:-20}
NALCAST=target/release/nalcast
BENCH=target/release/nalcast-bench
raw=$(mktemp -d /tmp/nalcast-stills.XXXXXX)
hz=$(getconf CLK_TCK)
port=18700
pid=""
stop() { stop_server pid; }
trap 'stop; rm -rf "$raw"' EXIT

start() { # nalcast args
    stop
    "$NALCAST" --listen "127.0.0.1:$port" --legacy-listen off "$@" >"$raw/server.log" 2>&1 &
    pid=$!
    healthy "http://127.0.0.1:$port" "stills-bench: nalcast"
}
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
cpu_over() { # seconds: nalcast's CPU, % of one core, over that long from now
    local c0 c1
    c0=$(ticks)
    sleep "$1"
    c1=$(ticks)
    awk -v c=$((c1 - c0)) -v hz="$hz" -v s="$1" 'BEGIN {printf "%.1f", 100 * c / hz / s}'
}

# A 640x360 camera-like clip (the test pattern recorded once), played as a file so
# that no encoder runs in nalcast while it is measured.
start --source test --width 640 --height 360 --bitrate 1000000 --keyframe-interval 60
"$BENCH" --url "ws://127.0.0.1:$port/ws/raw" --dialect raw --duration 10 --record "$raw/clip.h264" >/dev/null
start --source "file:$raw/clip.h264" --fps 30 --mjpeg-fps 10 --mjpeg-width 0

# Snapshot latency: one request every 100 ms (a new picture each time, so each one
# decodes the frames since the last and encodes a JPEG).
for _ in $(seq $((duration * 10))); do
    curl -s -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$port/snapshot.jpg"
    sleep 0.1
done >"$raw/latency.txt"
read -r p50 p95 < <(sort -n "$raw/latency.txt" | awk '{v[NR] = $1} END {printf "%.1f %.1f\n", 1000 * v[int(NR * 0.5)], 1000 * v[int(NR * 0.95)]}')

# MJPEG: nalcast's CPU with no MJPEG viewer, then with one (ffmpeg reading it).
sleep 2
idle=$(cpu_over "$duration")
ffmpeg -v error -f mpjpeg -i "http://127.0.0.1:$port/mjpeg" -f null - >/dev/null 2>&1 &
reader=$!
sleep 2
busy=$(cpu_over "$duration")
kill "$reader" 2>/dev/null || true
wait "$reader" 2>/dev/null || true
stop
per_stream=$(awk -v a="$idle" -v b="$busy" 'BEGIN {printf "%.1f", b - a}')
# docs/raspberry-pi.md, method 2 (CPU time here × this core's IPC × clock ÷ the
# Pi's): a Pi 4 takes 2.5 to 5.4 times as long, a Pi 5 1.0 to 2.0 times.
pi4=$(awk -v c="$per_stream" 'BEGIN {printf "%.0f-%.0f", c * 2.5, c * 5.4}')
pi5=$(awk -v c="$per_stream" 'BEGIN {printf "%.0f-%.0f", c * 1.0, c * 2.0}')

echo "## Snapshots and MJPEG"
echo
echo "Command: \`scripts/stills-bench.sh $duration\` (run by \`make bench\`): a 640x360 30 fps clip (the test pattern, recorded) as a file source; $((duration * 10)) snapshot requests 100 ms apart (each a new picture: the frames since the last decoded, a JPEG encoded); then nalcast's CPU over ${duration} s with no MJPEG viewer and with one (ffmpeg reading /mjpeg at --mjpeg-fps 10, full size). Pi figures: this machine's CPU time × 2.5-5.4 (Pi 4) or × 1.0-2.0 (Pi 5), method 2 of docs/raspberry-pi.md, an estimate."
echo
echo "| snapshot latency p50 ms | p95 ms | nalcast CPU %, no MJPEG viewer | with one | one MJPEG stream, % of a core | Pi 4 estimate % | Pi 5 estimate % |"
echo "|---|---|---|---|---|---|---|"
echo "| $p50 | $p95 | $idle | $busy | $per_stream | $pi4 | $pi5 |"
echo
