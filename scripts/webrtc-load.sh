#!/usr/bin/env bash
# WebRTC viewers against wss:// viewers: what each costs nalcast (issue 31's target:
# 100 WebRTC viewers at most 1.5x the CPU of 100 wss:// viewers). Same run, same
# source (a recorded clip, so the encoder's cost is out), nalcast pinned to core 0
# and the load generator to core 1 as the pinned wss rows of make bench.
#   scripts/webrtc-load.sh NALCAST BENCH WHEP_LOAD CLIP SECONDS VIEWERS
# Prints a markdown section.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/healthy.sh
source scripts/lib/healthy.sh

nalcast=$1 bench=$2 whep_load=$3 clip=$4 seconds=$5 viewers=$6
work=$(mktemp -d)
pid=""
stop() { stop_server pid; }
trap 'stop; rm -rf "$work"' EXIT

pin_server=() pin_load=()
if taskset -c 1 true 2>/dev/null; then pin_server=(taskset -c 0) pin_load=(taskset -c 1); fi

serve() { # http|https: nalcast on the clip, WebRTC on a port of its own
    local tls=()
    [[ $1 == https ]] && tls=(--tls self-signed --data-dir "$work/tls")
    "${pin_server[@]}" "$nalcast" --listen 127.0.0.1:18290 --legacy-listen off --webrtc 127.0.0.1:18291 \
        --max-viewers 5000 --max-viewers-per-ip 5000 --source "file:$clip" --fps 30 "${tls[@]}" \
        >"$work/server.log" 2>&1 &
    pid=$!
    healthy "$1://127.0.0.1:18290" "webrtc-load: nalcast ($1)"
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# nalcast's CPU (% of one core) over SECONDS once the viewers are in: the load
# generator runs in the background for ramp + SECONDS + a margin.
measure() { # name, then the load generator's command
    local name=$1
    shift
    "${pin_load[@]}" "$@" >"$work/$name.out" 2>&1 &
    local load=$!
    sleep 6 # the viewers join (a keyframe for each) before the window opens
    local a b hz
    hz=$(getconf CLK_TCK)
    a=$(cpu_ticks "$pid")
    sleep "$seconds"
    b=$(cpu_ticks "$pid")
    wait "$load" || echo "webrtc-load: $name: the load generator failed: $(tail -n 3 "$work/$name.out")" >&2
    awk -v a="$a" -v b="$b" -v s="$seconds" -v hz="$hz" 'BEGIN {printf "%.1f", (b - a) / hz / s * 100}'
}

pair() { # sets wss and rtc: one wss:// and one WebRTC measurement
    serve https
    wss=$(measure wss "$bench" --name wss --url "wss://127.0.0.1:18290/ws" --ca "$work/tls/tls/self-signed.crt" \
        --viewers "$viewers" --duration $((seconds + 8)))
    stop
    serve http
    rtc=$(measure whep "$whep_load" --url "http://127.0.0.1:18290/whep" --viewers "$viewers" \
        --duration $((seconds + 4)) --recv-buffer 4194304)
    stop
}
pair
# The same WebRTC viewers receiving each datagram on its own (no UDP GRO): on
# loopback the kernel then receives the 30,000 datagrams a second of 100 viewers
# one by one in nalcast's time, where a TCP viewer's receiving is of 64 KiB segments.
serve http
rtc_no_gro=$(measure whep-no-gro "$whep_load" --url "http://127.0.0.1:18290/whep" --viewers "$viewers" \
    --duration $((seconds + 4)) --recv-buffer 4194304 --no-gro --name whep-no-gro)
stop
lines=$(grep -hE '^\| (wss|whep|whep-no-gro) ' "$work/wss.out" "$work/whep.out" "$work/whep-no-gro.out" || true)

# On loopback the receiving side's kernel work (softirq) runs on the sender's core,
# in nalcast's time, for TCP and UDP alike; on a network the viewer's machine does
# it. Steering loopback's receive processing to the load generator's core (RPS)
# leaves each path its sending side only. Needs root; the setting is restored.
rps=/sys/class/net/lo/queues/rx-0/rps_cpus
rps_row=""
if [[ ${#pin_load[@]} -gt 0 && -w $rps ]]; then
    rps_was=$(cat "$rps")
    trap 'stop; echo "$rps_was" >"$rps"; rm -rf "$work"' EXIT
    plain_wss=$wss plain_rtc=$rtc
    echo 2 >"$rps"
    pair
    echo "$rps_was" >"$rps"
    rps_row=$(awk -v v="$viewers" -v w="$wss" -v r="$rtc" \
        'BEGIN {printf "| %s, loopback receive on the load generator'"'"'s core (RPS) | %s | %s | %.2f |", v, w, r, (w > 0 ? r / w : 0)}')
    wss=$plain_wss rtc=$plain_rtc
fi

echo "## WebRTC viewers against wss:// viewers (scripts/webrtc-load.sh)"
echo
echo "nalcast's CPU over ${seconds} s with ${viewers} viewers of the same recorded 1280x720 30 fps clip, once they are in; nalcast on core 0, the load generator on core 1 (\`${pin_load[*]:-unpinned}\`). wss:// viewers by nalcast-bench (TLS 1.3), WebRTC viewers by nalcast-whep-load (str0m: ICE, DTLS-SRTP, NACK; receiving with UDP GRO, a run of datagrams at a time, unless the row says not). Target (issue 31): WebRTC at most 1.5x wss://."
echo
echo "| viewers | wss:// CPU % | WebRTC CPU % | ratio |"
echo "|---|---|---|---|"
awk -v v="$viewers" -v w="$wss" -v r="$rtc" 'BEGIN {printf "| %s | %s | %s | %.2f |\n", v, w, r, (w > 0 ? r / w : 0)}'
awk -v v="$viewers" -v w="$wss" -v r="$rtc_no_gro" \
    'BEGIN {printf "| %s, WebRTC viewers receiving without GRO | %s | %s | %.2f |\n", v, w, r, (w > 0 ? r / w : 0)}'
if [[ -n $rps_row ]]; then echo "$rps_row"; fi
echo
echo "The load generators' own lines:"
echo
echo '```'
echo "$lines"
echo '```'
