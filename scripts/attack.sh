#!/bin/bash
# Runs nalcast under a small device's address-space limit (prlimit --as=1500000000),
# one normal viewer (nalcast-bench, 1 viewer) during the attack, and one of
# scripts/attacks.py's attacks; prints nalcast's resident memory before, at its
# peak and after, the viewer's row, and whether nalcast is still alive.
#
#   scripts/attack.sh BIN "NALCAST ARGS" ATTACK-ARGS...
#   e.g. VIEWER=30 WARM=4 scripts/attack.sh target/debug/nalcast "" --seconds 10 slow-segments --readers 4000
#
# VIEWER=SECONDS runs the viewer (VIEWER_QUERY is appended to its URL, e.g.
# "?token=..."), WARM=SECONDS waits before attacking. Listens on 127.0.0.1:18000.
set -u
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=$1; shift; args=$1; shift
tmp=$(mktemp -d)
# shellcheck disable=SC2086 # the arguments are split on purpose
prlimit --as=1500000000 "$bin" --listen 127.0.0.1:18000 --legacy-listen off $args >"$tmp/out" 2>"$tmp/err" &
pid=$!
for _ in $(seq 100); do grep -q "listening on" "$tmp/out" 2>/dev/null && break; sleep 0.1; done
sleep "${WARM:-1}"
if [ -n "${VIEWER:-}" ]; then
    "$repo/target/debug/nalcast-bench" --url "ws://127.0.0.1:18000/ws${VIEWER_QUERY:-}" --viewers 1 \
        --duration "$VIEWER" >"$tmp/viewer" 2>&1 &
    vpid=$!
fi
python3 "$repo/scripts/attacks.py" --pid "$pid" --addr 127.0.0.1:18000 "$@"
if [ -n "${VIEWER:-}" ]; then
    wait "$vpid"
    echo "the normal viewer (nalcast-bench: started, errors, ttff, live after, not live, >=95% fps, fps p5/p50, max gap ms, lost, ...):"
    tail -n 1 "$tmp/viewer"
fi
sleep 0.5
if kill -0 "$pid" 2>/dev/null; then
    echo "nalcast alive, $(grep VmRSS /proc/$pid/status)"
    kill "$pid"
else
    echo "nalcast DIED:"
    tail -n 3 "$tmp/err"
fi
wait "$pid" 2>/dev/null
rm -rf "$tmp"
