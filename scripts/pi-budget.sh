#!/usr/bin/env bash
# What nalcast costs per viewer, measured here as instruction counts and CPU time, for
# the Raspberry Pi estimate in docs/raspberry-pi.md ("What to expect: CPU and bandwidth").
# The server plays a recorded camera clip (a file source: no encoder in the process, as
# with a Pi camera, whose encoder runs in rpicam-vid) to 0, 1, 10, 50 viewers; each run
# counts what the server does in a steady window while the viewers watch.
#
#   scripts/pi-budget.sh [MODE...]        default: native callgrind qemu
#     native     CPU time of the x86-64 release binary: task-clock (perf), user and
#                kernel time (/proc/PID/stat), context switches
#     callgrind  user-space x86-64 instructions (valgrind --tool=callgrind, counters
#                zeroed at the window's start and dumped at its end)
#     qemu       user-space AArch64 instructions: the arm64 release binary under
#                qemu-aarch64 with a small instruction-counting TCG plugin (built here)
#     tls        callgrind, qemu and native: 10 plain vs 10 HTTPS viewers (a small Python
#                client for both), AES-256-GCM (TLS 1.3), AES-128-GCM and ChaCha20-Poly1305
#                (TLS 1.2); under qemu also without the Armv8 crypto extensions (-noaes)
#
#   VIEWERS="0 1 10 50" CLIPS="720p 480p" WINDOW=15 WARM=5   the defaults
#
# Hardware counters (perf stat -e instructions) are what this would use on bare metal;
# in this VM they are "<not supported>", hence valgrind and qemu. Kernel instructions
# cannot be counted either: the kernel's share is CPU time (native mode).
# Raw lines go to bench/results/pi-budget-DATE/ (not committed).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
modes=("$@")
[[ ${#modes[@]} -gt 0 ]] || modes=(native callgrind qemu)
viewers_list=${VIEWERS:-0 1 10 50}
clips=${CLIPS:-720p 480p}
window=${WINDOW:-15}
sample_window=${SAMPLE_WINDOW:-8}
warm=${WARM:-5}
port=${PORT:-18610}
day=$(date -u +%Y-%m-%d)
raw=$root/bench/results/pi-budget-$day
mkdir -p "$raw"
tsv=$raw/runs.tsv

target_dir=${CARGO_TARGET_DIR:-$root/target}
NALCAST=$target_dir/release/nalcast
BENCH=$target_dir/release/nalcast-bench
ARM_NALCAST=$target_dir/aarch64-unknown-linux-gnu/release/nalcast
cargo build --release --quiet -p nalcast -p nalcast-bench
if [[ " ${modes[*]} " == *" qemu "* || " ${modes[*]} " == *" tls "* ]]; then
    export PATH="${XDG_CACHE_HOME:-$HOME/.cache}/nalcast/zig-0.17.1/ziglang:$PATH"
    cargo zigbuild --release --locked --quiet -p nalcast --target aarch64-unknown-linux-gnu.2.31
fi
idle=()
if chrt --idle 0 true 2>/dev/null; then idle=(chrt --idle 0); fi
ulimit -n 65536 2>/dev/null || true

# --- the camera clips: 10 s of the test pattern as a viewer receives it (/ws/raw) ---
declare -A clip_args=([720p]="1280 720 3000000" [480p]="640 480 1000000")
server_pid=""
stop() {
    if [[ -n $server_pid ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
trap stop EXIT
source scripts/lib/healthy.sh
up() { # scheme: the emulated builds start slowly
    healthy "$1://127.0.0.1:$port" "pi-budget: nalcast (log: $raw/server.log)" 60
}
for c in $clips; do
    [[ -s $raw/clip-$c.h264 ]] && continue
    read -r w h b <<< "${clip_args[$c]}"
    "$NALCAST" --listen 127.0.0.1:$port --legacy-listen off --source test --width "$w" --height "$h" \
        --bitrate "$b" --fps 30 --keyframe-interval 60 > "$raw/server.log" 2>&1 &
    server_pid=$!
    up http
    "$BENCH" --url "ws://127.0.0.1:$port/ws/raw" --dialect raw --duration 10 --record "$raw/clip-$c.h264" >/dev/null
    stop
done

# --- the instruction-counting plugin for qemu-aarch64 (TCG plugin API version 1) ---
plugin=$raw/libinsncount.so
if [[ ( " ${modes[*]} " == *" qemu "* || " ${modes[*]} " == *" tls "* ) && ! -s $plugin ]]; then
    cat > "$raw/insncount.c" <<'EOF'
/* Counts guest instructions of all threads (per translated block, atomically) and
 * appends "unix_seconds count" to out= every 0.1 s and at exit. */
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>
typedef uint64_t qemu_plugin_id_t;
typedef struct { const char *target_name; struct { int min, cur; } version; _Bool system_emulation;
                 union { struct { int smp_vcpus, max_vcpus; } system; }; } qemu_info_t;
struct qemu_plugin_tb;
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t, void (*)(qemu_plugin_id_t, struct qemu_plugin_tb *));
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *, void (*)(unsigned int, void *), int, void *);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t, void (*)(qemu_plugin_id_t, void *), void *);
__attribute__((visibility("default"))) int qemu_plugin_version = 1;
static uint64_t count;
static const char *out = "insncount.txt";
static void on_exec(unsigned int vcpu, void *n) { (void)vcpu; __atomic_fetch_add(&count, (uint64_t)(uintptr_t)n, __ATOMIC_RELAXED); }
static void on_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    (void)id;
    qemu_plugin_register_vcpu_tb_exec_cb(tb, on_exec, 0, (void *)(uintptr_t)qemu_plugin_tb_n_insns(tb));
}
static void report(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    FILE *f = fopen(out, "a");
    if (!f) return;
    fprintf(f, "%ld.%03ld %llu\n", (long)ts.tv_sec, ts.tv_nsec / 1000000,
            (unsigned long long)__atomic_load_n(&count, __ATOMIC_RELAXED));
    fclose(f);
}
static void *reporter(void *arg) { (void)arg; for (;;) { report(); usleep(100000); } return NULL; }
static void at_exit(qemu_plugin_id_t id, void *p) { (void)id; (void)p; report(); }
__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv) {
    (void)info;
    for (int i = 0; i < argc; i++) if (strncmp(argv[i], "out=", 4) == 0) out = argv[i] + 4;
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_trans);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    pthread_t t;
    pthread_create(&t, NULL, reporter, NULL);
    pthread_detach(t);
    return 0;
}
EOF
    gcc -O2 -Wall -shared -fPIC -fvisibility=hidden -o "$plugin" "$raw/insncount.c" -lpthread
fi
noaes=$raw/noaes.so
if [[ " ${modes[*]} " == *" tls "* && ! -s $noaes ]]; then
    cat > "$raw/noaes.c" <<'EOF'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <sys/auxv.h>
/* AT_HWCAP without the Armv8 crypto extensions (AES, PMULL, SHA1, SHA2, SHA512), as on a
 * Pi 4 or Zero 2 W (BCM2711, BCM2710A1): ring then takes its software AES-GCM path. */
unsigned long getauxval(unsigned long type) {
    static unsigned long (*real)(unsigned long);
    if (!real) real = (unsigned long (*)(unsigned long))dlsym(RTLD_NEXT, "getauxval");
    unsigned long v = real(type);
    if (type == AT_HWCAP) v &= ~((1UL << 3) | (1UL << 4) | (1UL << 5) | (1UL << 6) | (1UL << 21));
    return v;
}
EOF
    zig cc -target aarch64-linux-gnu.2.31 -O2 -shared -fPIC -o "$noaes" "$raw/noaes.c" -ldl
fi

# --- a minimal viewer for HTTPS (and plain, to compare like with like): reads /ws, discards ---
pyviewer=$raw/viewer.py
cat > "$pyviewer" <<'EOF'
import asyncio, base64, os, ssl, sys
scheme, port, n, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
cipher = sys.argv[5] if len(sys.argv) > 5 else ""
total = 0
negotiated = set()
async def viewer():
    global total
    ctx = None
    if scheme == "https":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if cipher:  # TLS 1.2 to choose the suite (Python cannot order TLS 1.3 suites)
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            ctx.set_ciphers({"aes128": "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256",
                             "chacha": "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"}[cipher])
    r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    key = base64.b64encode(os.urandom(16)).decode()
    w.write((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = await r.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head[:80]
    if ctx:
        negotiated.add(" ".join(map(str, w.get_extra_info("ssl_object").cipher()[:2])))
    loop = asyncio.get_running_loop()
    end = loop.time() + secs
    while loop.time() < end:
        try:
            b = await asyncio.wait_for(r.read(65536), end - loop.time())
        except asyncio.TimeoutError:
            break
        if not b:
            break
        total += len(b)
    w.close()
async def main():
    await asyncio.gather(*(viewer() for _ in range(n)))
asyncio.run(main())
print(f"{n} viewers read {total} bytes in {secs} s: {total * 8 / secs / 1e6:.1f} Mbit/s; TLS: {sorted(negotiated) or 'none'}")
EOF

metric() { # name scheme: summed over its streams
    curl -sfk "$2://127.0.0.1:$port/metrics" | awk -v m="$1" 'index($1, m "{") == 1 || $1 == m {s += $2} END {print s + 0}'
}
now() { date +%s.%N; }

# One run: MODE CLIP VIEWERS CLIENT(bench|py) SCHEME(http|https) [VARIANT]
# VARIANT (https, py client): "" TLS 1.3 as Python offers it (AES-256-GCM), aes128 or
# chacha (TLS 1.2, that suite only); with -noaes (qemu) the server's AT_HWCAP lacks the
# Armv8 crypto extensions, as on a Pi 4 or Zero 2 W.
run_one() {
    local mode=$1 clip=$2 n=$3 client=$4 scheme=$5 variant=${6:-}
    local tag="$mode-$clip-$n-$client-$scheme${variant:+-$variant}"
    local cipher=${variant%-noaes}
    local server_cmd=()
    case $mode in
        native) server_cmd=("$NALCAST") ;;
        callgrind) server_cmd=(valgrind --tool=callgrind --callgrind-out-file="$raw/cg-$tag.%p.out" "$NALCAST") ;;
        qemu)
            rm -f "$raw/qemu-$tag.counts"
            local preload=()
            [[ $variant == *-noaes ]] && preload=(-E "LD_PRELOAD=$noaes")
            server_cmd=(qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu cortex-a72 "${preload[@]}"
                -plugin "$plugin,out=$raw/qemu-$tag.counts" "$ARM_NALCAST")
            ;;
    esac
    local tls=(--tls off)
    [[ $scheme == https ]] && tls=(--tls self-signed --data-dir "$raw/data")
    stop
    "${server_cmd[@]}" --listen 127.0.0.1:$port --legacy-listen off --max-viewers 5000 \
        --max-viewers-per-ip 5000 "${tls[@]}" --source "file:$raw/clip-$clip.h264" --fps 30 \
        > "$raw/server-$tag.log" 2>&1 &
    server_pid=$!
    up "$scheme"
    local vpid=""
    local secs=$((warm + window + 3))
    [[ $mode == native ]] && secs=$((secs + sample_window))
    if [[ $n -gt 0 ]]; then
        if [[ $client == bench ]]; then
            "${idle[@]}" "$BENCH" --name "$tag" --url "ws://127.0.0.1:$port/ws" --viewers "$n" --duration "$secs" \
                > "$raw/viewers-$tag.txt" 2>&1 &
        else
            "${idle[@]}" python3 "$pyviewer" "$scheme" "$port" "$n" "$secs" $cipher > "$raw/viewers-$tag.txt" 2>&1 &
        fi
        vpid=$!
    fi
    sleep "$warm"
    local f0 b0 t0 f1 b1 t1 stat0 stat1 extra=""
    f0=$(metric nalcast_frames_in_total "$scheme")
    b0=$(metric nalcast_bytes_out_total "$scheme")
    t0=$(now)
    case $mode in
        native)
            stat0=$(awk '{print $14, $15}' "/proc/$server_pid/stat")
            perf stat -x, -e task-clock,context-switches -p "$server_pid" -o "$raw/perf-$tag.csv" -- sleep "$window"
            stat1=$(awk '{print $14, $15}' "/proc/$server_pid/stat")
            ;;
        callgrind)
            callgrind_control -z "$server_pid" >/dev/null
            t0=$(now)
            sleep "$window"
            callgrind_control -d "$server_pid" >/dev/null
            ;;
        qemu) sleep "$window" ;;
    esac
    t1=$(now)
    f1=$(metric nalcast_frames_in_total "$scheme")
    b1=$(metric nalcast_bytes_out_total "$scheme")
    case $mode in
        native)
            local tc cs
            tc=$(awk -F, '$3 == "task-clock" {print $1}' "$raw/perf-$tag.csv")
            cs=$(awk -F, '$3 == "context-switches" {print $1}' "$raw/perf-$tag.csv")
            # Then, in a window of its own (sampling adds to the CPU time it measures):
            # a sample every 100 us of the server's CPU time, user vs kernel.
            perf record -q -e cpu-clock -c 100000 -p "$server_pid" -o "$raw/perf-$tag.data" -- sleep "$sample_window" 2>/dev/null
            local split
            split=$(perf report -i "$raw/perf-$tag.data" --stdio --sort dso 2>/dev/null |
                awk '/^# Samples/ { n = $3 } $2 == "[kernel.kallsyms]" { k = $1 } END { sub("%", "", k); printf "samples=%s kernel_share=%.3f", n, k / 100 }')
            extra=$(echo "$stat0 $stat1" | awk -v tc="$tc" -v cs="$cs" -v hz="$(getconf CLK_TCK)" -v sp="$split" \
                '{printf "task_clock_ms=%s utime_s=%.2f stime_s=%.2f ctx_switches=%s %s", tc, ($3-$1)/hz, ($4-$2)/hz, cs, sp}')
            ;;
        callgrind)
            local f
            f=$(ls -t "$raw"/cg-"$tag".*.out.1 | head -1)
            extra="user_instructions=$(awk '/^summary:/ {print $2}' "$f")"
            ;;
        qemu)
            sleep 0.3
            extra=$(awk -v a="$t0" -v b="$t1" '
                { t[NR] = $1; c[NR] = $2 }
                END {
                    for (i = 1; i <= NR; i++) { if (t[i] <= a) i0 = i; if (t[i] <= b) i1 = i }
                    printf "user_instructions=%.0f counted_s=%.3f", c[i1] - c[i0], t[i1] - t[i0]
                }' "$raw/qemu-$tag.counts")
            ;;
    esac
    [[ -n $vpid ]] && wait "$vpid"
    stop
    local line
    line=$(printf '%s\tclip=%s\tviewers=%s\tclient=%s\tscheme=%s\tvariant=%s\tframes=%s\tseconds=%.3f\tbytes_out=%s\t%s' \
        "$mode" "$clip" "$n" "$client" "$scheme" "${variant:--}" "$((f1 - f0))" "$(echo "$t1 - $t0" | bc)" "$((b1 - b0))" "$extra")
    echo "$line" | tee -a "$tsv"
}

for mode in "${modes[@]}"; do
    case $mode in
        native | callgrind | qemu)
            for c in $clips; do
                for n in $viewers_list; do run_one "$mode" "$c" "$n" bench http; done
            done
            ;;
        tls)
            for m in callgrind qemu native; do
                run_one "$m" 720p 0 py http
                run_one "$m" 720p 10 py http
                for v in "" aes128 chacha; do run_one "$m" 720p 10 py https "$v"; done
                if [[ $m == qemu ]]; then
                    for v in aes128-noaes chacha-noaes; do run_one "$m" 720p 10 py https "$v"; done
                fi
            done
            ;;
        *) echo "pi-budget: unknown mode $mode" >&2; exit 2 ;;
    esac
done
echo "pi-budget: raw lines in $tsv"
