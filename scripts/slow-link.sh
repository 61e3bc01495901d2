#!/usr/bin/env bash
# Slow links (issue 17): joins over a shaped link, measured for real. nalcast and its
# viewers run inside a network namespace of their own whose loopback is shaped with
# tc's token bucket filter, at each rate in turn; the source is a camera-like encoder
# (ffmpeg, 720p30, 3 Mbit/s, a keyframe every 2 s) that cannot make a keyframe when
# asked, so a viewer joins at whatever point of the GOP it happens to arrive.
# nalcast-bench then joins viewers one at a time, each alone on the link, at spread
# GOP phases, and measures for each: time to first picture, and time until live
# (every frame from then on within 100 ms of its capture, for at least 2.5 s).
#
#   scripts/slow-link.sh [NALCAST BENCH]    (default: the release binaries)
#   SLOW_RATES="20 5"   link rates, Mbit/s
#   SLOW_JOINS=20       joins per rate
#   SLOW_STAY=8         seconds each viewer stays (with the 2 s pause, 5 GOPs a join)
#   SLOW_OUT=DIR        where the raw JSON goes (default test-output/slow-link)
#   SLOW_DETAIL=1       also a table of every join
#
# Prints a markdown section on stdout (progress on stderr). Needs root (network
# namespaces), iproute2, ethtool and ffmpeg with libx264 (scripts/setup.sh --test);
# without them it says so in one line and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${CARGO_TARGET_DIR:-target}
nalcast=${1:-$target/release/nalcast}
bench=${2:-$target/release/nalcast-bench}
rates=${SLOW_RATES:-20 5}
joins=${SLOW_JOINS:-20}
stay=${SLOW_STAY:-8}
out=${SLOW_OUT:-test-output/slow-link}

skip() {
    echo "Slow links: skipped: $*"
    exit 0
}
for tool in ip tc nsenter; do
    command -v "$tool" >/dev/null || skip "no '$tool' (iproute2, util-linux) on this machine"
done
[[ $(id -u) -eq 0 ]] || skip "network namespaces need root (run as root, e.g. sudo scripts/slow-link.sh)"
command -v ethtool >/dev/null || skip "no ethtool (scripts/setup.sh --test installs it)"
encoders=$(ffmpeg -hide_banner -encoders 2>/dev/null || true)
[[ $encoders == *libx264* ]] || skip "no ffmpeg with libx264 (scripts/setup.sh --test installs it)"
for bin in "$nalcast" "$bench"; do
    [[ -x $bin ]] || { echo "slow-link: $bin is missing: cargo build --release -p nalcast -p nalcast-bench" >&2; exit 1; }
done
mkdir -p "$out"

# The source: a camera stand-in. 3 Mbit/s with a 1 Mbit VBV buffer (a keyframe can
# be at most about 1 Mbit), 60-frame GOP at 30 fps (2 s), Baseline.
fps=30
gop_frames=60
source="exec:ffmpeg -hide_banner -loglevel error -re -f lavfi -i testsrc2=size=1280x720:rate=$fps -c:v libx264 -preset ultrafast -tune zerolatency -profile:v baseline -g $gop_frames -b:v 3M -maxrate 3M -bufsize 1M -f h264 -"
gop_s=$((gop_frames / fps))

# The shaper. tbf drops any packet larger than its bucket, so the bucket must hold
# a whole frame of the 1500-byte MTU set below (1514 bytes with the link header):
# 32 kbit (4000 bytes, two full frames) is as small as that allows, so the link
# sends at its rate packet by packet, as a real one does, instead of letting bursts
# through at memory speed. latency 50 ms sizes the queue in front of it (the rate's
# 50 ms plus the bucket: 125 kB at 20 Mbit/s, 35 kB at 5 Mbit/s): a packet that
# would wait longer is dropped, as by a router's full buffer, and TCP backs off;
# a deeper queue would only let TCP fill it and add its delay to every frame.
# Segmentation offloads off: with them the stack hands the shaper 64 kB packets.
shape() { tc -n "$ns" qdisc replace dev lo root tbf rate "${1}mbit" burst 32kbit latency 50ms; }

ns=nalcast-slow-$$
ns_made=""
server_pid=""
cleanup() {
    set +e
    if [[ -n $server_pid ]]; then
        kill "$server_pid" 2>/dev/null
        for _ in $(seq 30); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    fi
    if [[ -n $ns_made ]]; then
        # Whatever still runs in the namespace is ours (nalcast's ffmpeg, a bench).
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null; done
        for _ in $(seq 20); do [[ -z $(ip netns pids "$ns" 2>/dev/null) ]] && break; sleep 0.1; done
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
        ip netns del "$ns" 2>/dev/null
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$ns" 2>/dev/null || skip "cannot create a network namespace (ip netns add failed: not permitted here?)"
ns_made=1
ip -n "$ns" link set lo mtu 1500 up
ip netns exec "$ns" ethtool -K lo gso off tso off gro off
shape "${rates%% *}"

port=8000
in_ns() { nsenter --net="/run/netns/$ns" -- "$@"; }
# nsenter execs the command itself (ip netns exec forks, as would a shell function
# sent to the background), so $! is nalcast's own process id, for the bench's CPU
# and memory samples.
nsenter --net="/run/netns/$ns" -- "$nalcast" --listen "127.0.0.1:$port" --legacy-listen off --source "$source" --fps "$fps" \
    >"$out/nalcast.log" 2>&1 &
server_pid=$!
healthy=""
for _ in $(seq 100); do
    if in_ns curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then healthy=1; break; fi
    sleep 0.1
done
[[ -n $healthy ]] || { echo "slow-link: nalcast did not become healthy (log: $out/nalcast.log)" >&2; exit 1; }
sleep "$gop_s" # a whole GOP in the cache before the first join

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
rows=()
details=()
for rate in $rates; do
    shape "$rate"
    echo "slow-link: $rate Mbit/s, $joins joins of ${stay} s each, one at a time" >&2
    json=$out/slow-${rate}mbit.json
    # Joins one after another, each alone on the link; the pause before each is a
    # golden-ratio point of one GOP, so the joins fall at spread GOP phases.
    # In the background, so that a signal ends the wait (and the trap cleans up) at
    # once instead of after the bench.
    in_ns "$bench" --name "slow-${rate}mbit" --url "ws://127.0.0.1:$port/ws" \
        --viewers "$joins" --sequential --ramp "$gop_s" --duration "$stay" --fps "$fps" \
        --live-within-ms 100 --live-hold-ms 2500 --link-mbit "$rate" --frame-log \
        --pid "$server_pid" --json "$json" >"$out/slow-${rate}mbit.txt" &
    wait $!
    rows+=("$(node -e '
        const j = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
        const [rate, gop, stay] = [process.argv[2], process.argv[3], Number(process.argv[4])];
        const s = j.summary, v = j.per_viewer;
        const ms = (x) => (x === null || x === undefined ? "never" : x.toFixed(0));
        const pct = (a, p) => { const b = a.slice().sort((x, y) => x - y); return b.length ? b[Math.max(0, Math.ceil((p / 100) * b.length) - 1)] : null; };
        const med = (a) => pct(a, 50);
        // The last 3 s of each stay: every join has caught up by then (or never will).
        const steady = v.flatMap((r) => (r.frame_log || []).filter((f) => !f.catch_up && f.at_ms >= (stay - 3) * 1000));
        const lat = steady.map((f) => f.latency_ms), keys = steady.filter((f) => f.keyframe).map((f) => f.latency_ms);
        const bounds = v.map((r) => r.live_bound).filter(Boolean);
        const wire = med(bounds.map((b) => b.stream_mbit));
        const gopKb = med(bounds.map((b) => b.gop_bytes / 1000));
        const first150 = v.filter((r) => r.ttff_ms !== null && r.ttff_ms <= 150).length;
        const [met, judged] = s.live_in_bound || [0, 0];
        const cpu = s.cpu_pct[0] === null ? "-" : s.cpu_pct[0].toFixed(1);
        console.log(`| ${rate} Mbit/s | 720p30, ${gop} s GOP, 3 Mbit/s (${wire === null ? "-" : wire.toFixed(2)} on the wire; GOP so far at join: median ${gopKb === null ? "-" : gopKb.toFixed(0)} kB) | ${s.viewers} (${s.started} started, ${s.errors} errors) | ${ms(s.ttff_ms[0])} / ${ms(s.ttff_ms[1])} | ${first150} of ${s.viewers} | ${ms(s.live_after_ms[0])} / ${ms(s.live_after_ms[1])} / ${ms(s.live_after_ms[2])} | ${s.not_live} | ${met} of ${judged} | ${ms(pct(lat, 50))} / ${ms(pct(lat, 99))} | ${ms(pct(keys, 50))} / ${ms(pct(keys, 100))} | ${s.lost} | ${cpu} |`);
    ' "$json" "$rate" "$gop_s" "$stay")")
    if [[ ${SLOW_DETAIL:-0} == 1 ]]; then
        details+=("$(node -e '
            const j = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
            const f = (x, d = 0) => (x === null || x === undefined ? "-" : x.toFixed(d));
            j.per_viewer.forEach((r, i) => {
                const b = r.live_bound || {};
                const gop = b.gop_bytes === undefined ? "-" : (b.gop_bytes / 1000).toFixed(0) + (b.gop_bytes_estimated ? " (est.)" : "");
                console.log(`| ${process.argv[2]} | ${i + 1} | ${f(b.gop_phase_ms)} | ${gop} | ${f(b.next_keyframe_ms)} | ${f(b.spare_mbit, 2)} | ${f(b.bound_ms)} | ${f(r.ttff_ms)} | ${r.live_after_ms === null ? "never" : f(r.live_after_ms)} | ${r.live_in_bound === null ? "-" : r.live_in_bound ? "yes" : "no"} | ${r.lost} |`);
            });
        ' "$json" "$rate")")
    fi
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

echo "## Slow links"
echo
echo "nalcast and one viewer at a time (\`nalcast-bench --sequential\`) in a network namespace whose loopback (MTU 1500, segmentation offloads off) is shaped with \`tc qdisc tbf rate R burst 32kbit latency 50ms\`; data and ACKs share the shaper. Source: \`$source\` (an exec source makes no keyframe on demand). Each viewer stays ${stay} s; the joins fall at spread phases of the GOP. *Live after*: connect to the first frame from which every frame arrived within 100 ms of its capture, for at least 2.5 s; never-live joins count as infinitely late in the percentiles. *Steady*: live frames in the last 3 s of each stay, when every join has caught up: the floor under the 100 ms (mostly the link's time for a frame: a keyframe of 34 kB takes 55 ms of 5 Mbit/s). Load average before/after: $load_before / $load_after ($(nproc) cores). Command: \`scripts/slow-link.sh\` (JSON: $out)."
echo
echo "Target (issue 17): first picture ≤ 150 ms at 20 Mbit/s; live within min(the join's GOP bytes so far / the link's spare rate, time to the next keyframe) + 150 ms, per join. Spare rate: the link's TCP goodput (93.6 %: headers, and ACKs through the same shaper) less the stream's rate on the wire; GOP phase and bytes from the catch-up received (estimated from the next GOP when the join did not get its own whole); next keyframe from its capture time."
echo
echo "| link | stream | joins | first picture p50 / p95 ms | first picture ≤ 150 ms | live after p50 / p95 / max ms | never live | live within target | steady capture→arrival p50 / p99 ms | steady keyframes p50 / max ms | frames lost | nalcast CPU % (ffmpeg apart) |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
if ((${#details[@]})); then
    echo
    echo "| link Mbit/s | join | GOP phase ms | GOP so far kB | next keyframe ms | spare Mbit/s | target ms | first picture ms | live after ms | within target | lost |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${details[@]}"
fi
