#!/usr/bin/env bash
# Checks what `make dist` made, one line per check: each binary's CPU, stripping,
# highest GLIBC symbol version (Raspberry Pi OS Bullseye has 2.31) and libraries;
# each binary streaming the test pattern to a client here (the ARM ones under
# qemu-user), the capture decoded by ffmpeg, and publishing it to nginx's RTMP
# module (pulled back and decoded); each .deb's control fields,
# conffile, contents and maintainer scripts; the systemd unit.
#   DIST_ARCHES="arm64 armhf"   check only these
set -uo pipefail
cd "$(dirname "$0")/.."

version=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "nalcast"))')
max_glibc=2.31
tmp=$(mktemp -d)
# The WHEP client's Python (scripts/setup-webrtc-client.sh, run by setup --dist).
aiortc_python="${XDG_CACHE_HOME:-$HOME/.cache}/nalcast/aiortc-venv/bin/python"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
    rm -rf "$tmp"
}
trap cleanup EXIT

passed=0 failed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
check() { # check DESCRIPTION COMMAND...: ok when the command succeeds
    local what=$1
    shift
    if out=$("$@" 2>&1); then ok "$what${out:+: $out}"; else fail "$what${out:+: $out}"; fi
}

declare -A machine=([arm64]="ARM aarch64" [armhf]="ARM, EABI5" [amd64]="x86-64")
declare -A runner=(
    [arm64]="qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu cortex-a72"
    [armhf]="qemu-arm -L /usr/arm-linux-gnueabihf -cpu cortex-a7"
    [amd64]=""
)

check "packaging/nalcast.toml is generated from docs/configuration.md" packaging/tools/conffile.py --check
check_toml() {
    python3 - packaging/nalcast.toml <<'PY'
import re, sys, tomllib
text = open(sys.argv[1]).read()
assert tomllib.loads(text) == {}, "a setting is not commented out"
every = tomllib.loads(re.sub(r"(?m)^#([a-z-]+ = )", r"\1", text))
# The several-cameras example, its lines commented with "# ", uncommented alone.
example = text.split("## Several cameras", 1)[1]
tables = tomllib.loads(re.sub(r"(?m)^# (\[\[stream\]\]|[a-z-]+ = )", r"\1", example))["stream"]
assert all("name" in t and "source" in t for t in tables), tables
print(f"all commented out; {len(every)} options, valid TOML when uncommented; {len(tables)} example streams")
PY
}
check "conffile" check_toml

binary_arch() { # binary_arch ARCH FILE
    local info
    info=$(file -b "$2")
    [[ $info == *"${machine[$1]}"* ]] || { echo "not ${machine[$1]}: $info"; return 1; }
    [[ $info == *", stripped"* ]] || { echo "not stripped: $info"; return 1; }
    echo "${info%%,*}, ${machine[$1]}, stripped, $(stat -c %s "$2") bytes"
}
glibc_max() {
    local max
    max=$(readelf -V --wide "$1" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
    echo "GLIBC_$max"
    [[ $(printf '%s\n%s\n' "$max" "$max_glibc" | sort -V | tail -n 1) == "$max_glibc" ]]
}
libraries() {
    local needed
    needed=$(readelf -d "$1" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p')
    echo "${needed//$'\n'/ }"
    ! grep -qvE '^(libc|libm|libdl|libpthread|librt|ld-linux[-a-z0-9_.]*)\.so' <<<"$needed"
}

stream() { # stream ARCH BINARY CONFIG: the test pattern streamed to ws_capture, decoded by ffmpeg, and a snapshot
    local arch=$1 bin=$2 config=$3 log="$tmp/$1.log" cap="$tmp/$1.h264" port="" i
    # shellcheck disable=SC2086 # runner is a command with its arguments
    ${runner[$arch]} "$bin" --config "$config" --source test --width 320 --height 240 --fps 10 \
        --listen 127.0.0.1:0 --legacy-listen off --webrtc 127.0.0.1:0 --data-dir "$tmp/data-$arch" >"$log" 2>&1 &
    local pid=$!
    pids+=("$pid")
    for ((i = 0; i < 600; i++)); do
        port=$(sed -n 's|^listening on http://127.0.0.1:\([0-9]*\)/$|\1|p' "$log")
        [[ -n $port ]] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if [[ -z $port ]]; then
        echo "did not start: $(tail -n 3 "$log")"
        return 1
    fi
    local got still
    got=$(packaging/tools/ws_capture.py "ws://127.0.0.1:$port/ws/raw" "$cap" 8) || { echo "$got"; return 1; }
    # A snapshot: the stream decoded (openh264) and a JPEG made on this architecture.
    curl -sf -o "$tmp/$arch.jpg" "http://127.0.0.1:$port/snapshot.jpg?width=160" || { echo "no snapshot"; return 1; }
    still=$(ffprobe -v error -show_entries stream=codec_name,width,height -of csv=p=0 "$tmp/$arch.jpg")
    # WebRTC: a third-party client (aiortc) plays 3 s over WHEP; DTLS and SRTP run
    # on this architecture (str0m's rust-crypto backend, aws-lc's certificate).
    local whep played
    whep=$("$aiortc_python" tests/webrtc/whep_client.py "http://127.0.0.1:$port/whep" --seconds 3 2>&1) \
        || { kill "$pid"; echo "WHEP: ${whep//$'\n'/ }"; return 1; }
    played=$(python3 -c 'import json, sys; d = json.loads(sys.argv[1]); s = [x for x in d["stamps"] if x is not None]
gaps = sum(1 for a, b in zip(s, s[1:]) if b != a + 1)
print(",".join(str(v) for v in (d["frames"], d["width"], d["height"], d["packets_lost"], gaps)))' "$whep")
    kill "$pid"
    wait "$pid" 2>/dev/null
    [[ $still == mjpeg,160,120 ]] || { echo "snapshot: $still"; return 1; }
    local errors frames
    errors=$(ffmpeg -v error -i "$cap" -f null - 2>&1)
    [[ -z $errors ]] || { echo "ffmpeg: $errors"; return 1; }
    frames=$(ffprobe -v error -count_frames -select_streams v:0 \
        -show_entries stream=width,height,nb_read_frames -of csv=p=0 "$cap")
    echo "$got in 8 s; ffmpeg decoded width,height,frames = $frames; snapshot $still; WHEP frames,width,height,lost,gaps = $played"
    [[ $frames == 320,240,* ]] && ((${frames##*,} >= 10)) || return 1
    [[ $played =~ ^([0-9]+),320,240,0,0$ ]] && ((BASH_REMATCH[1] >= 15))
}

# One nginx with its RTMP module for the publish checks, on a free loopback port.
rtmp_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
rtmp_up=false
start_rtmp() {
    mkdir -p "$tmp/nginx/logs"
    cat >"$tmp/nginx/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
daemon off; master_process off; pid $tmp/nginx/nginx.pid; error_log $tmp/nginx/logs/error.log;
events { worker_connections 64; }
rtmp { server { listen 127.0.0.1:$rtmp_port; application live { live on; wait_key on; record off; } } }
CONF
    nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" >"$tmp/nginx/out.log" 2>&1 &
    pids+=("$!")
    for ((i = 0; i < 50; i++)); do
        (echo >"/dev/tcp/127.0.0.1/$rtmp_port") 2>/dev/null && { rtmp_up=true; return 0; }
        sleep 0.1
    done
    return 1
}

publish() { # publish ARCH BINARY: nalcast's own RTMP client sends the test pattern to nginx, pulled back and decoded
    local arch=$1 bin=$2 log="$tmp/$1-publish.log" url="rtmp://127.0.0.1:$rtmp_port/live/$1"
    $rtmp_up || { echo "no nginx RTMP server: $(tail -n 2 "$tmp/nginx/out.log" 2>/dev/null)"; return 1; }
    # shellcheck disable=SC2086 # runner is a command with its arguments
    NALCAST_PUBLISH=$url ${runner[$arch]} "$bin" --source test --width 320 --height 240 --fps 10 \
        --listen 127.0.0.1:0 --legacy-listen off --webrtc off --data-dir "$tmp/pub-$arch" >"$log" 2>&1 &
    local pid=$! frames errors
    pids+=("$pid")
    frames=$(timeout 60 ffprobe -v error -rw_timeout 30000000 -read_intervals %+3 -count_frames -select_streams v:0 \
        -show_entries stream=width,height,nb_read_frames -of csv=p=0 "$url" 2>&1)
    errors=$(timeout 60 ffmpeg -v error -rw_timeout 30000000 -i "$url" -t 2 -f null - 2>&1)
    kill "$pid"
    wait "$pid" 2>/dev/null
    echo "pulled back from nginx: width,height,frames in 3 s = $frames${errors:+; ffmpeg: $errors}"
    [[ -z $errors && $frames == 320,240,* ]] && ((${frames##*,} >= 10))
}

deb_fields() { # deb_fields ARCH DEB (adduser: postinst makes the nalcast system user)
    local control
    control=$(dpkg-deb -f "$2" Package Version Architecture Depends Suggests)
    echo "${control//$'\n'/; }"
    [[ $control == *"Package: nalcast"* && $control == *"Version: $version-1"* &&
        $control == *"Architecture: $1"* && $control == *"Depends: "*"libc6 (>= $max_glibc)"* &&
        $control == *"Depends: "*"adduser"* &&
        $control == *"Suggests: "*"ffmpeg"* ]]
}
deb_contents() { # deb_contents ARCH DEB BINARY
    local list dir="$tmp/deb-$1" path
    list=$(dpkg-deb -c "$2" | awk '{print $6}')
    for path in ./usr/bin/nalcast ./etc/nalcast/nalcast.toml ./usr/lib/systemd/system/nalcast.service \
        ./usr/share/doc/nalcast/raspberry-pi.md ./usr/share/doc/nalcast/configuration.md ./usr/share/doc/nalcast/copyright; do
        grep -qx "$path" <<<"$list" || { echo "missing $path"; return 1; }
    done
    dpkg-deb -x "$2" "$dir" && dpkg-deb -e "$2" "$dir/DEBIAN"
    cmp -s "$dir/usr/bin/nalcast" "$3" || { echo "usr/bin/nalcast is not dist's binary"; return 1; }
    cmp -s "$dir/usr/lib/systemd/system/nalcast.service" packaging/debian/nalcast.service || { echo "unit differs"; return 1; }
    [[ $(cat "$dir/DEBIAN/conffiles") == /etc/nalcast/nalcast.toml ]] || { echo "conffiles: $(cat "$dir/DEBIAN/conffiles")"; return 1; }
    echo "$(wc -l <<<"$list") entries; binary and unit as built; conffile /etc/nalcast/nalcast.toml"
}
deb_scripts() { # deb_scripts ARCH: what the maintainer scripts do, from the extracted control archive
    local dir="$tmp/deb-$1/DEBIAN" script
    for script in preinst postinst prerm postrm; do
        sh -n "$dir/$script" || { echo "$script: syntax"; return 1; }
    done
    grep -q 'deb-systemd-invoke stop nalcast.service' "$dir/prerm" || { echo "prerm does not stop the service"; return 1; }
    grep -q '_dh_action=restart' "$dir/postinst" || { echo "postinst does not restart on upgrade"; return 1; }
    grep -q 'deb-systemd-helper enable nalcast.service' "$dir/postinst" || { echo "postinst does not enable"; return 1; }
    # The ARMv6 refusal, with uname faked (the script reads nothing else of this machine
    # but /proc/cpuinfo, which here is an x86 CPU's).
    mkdir -p "$tmp/fake-$1"
    local m out
    for m in armv6l armv7l; do
        printf '#!/bin/sh\necho %s\n' "$m" >"$tmp/fake-$1/uname"
        chmod +x "$tmp/fake-$1/uname"
        out=$(PATH="$tmp/fake-$1:$PATH" sh "$dir/preinst" install 2>&1)
        local rc=$?
        if [[ $m == armv6l ]]; then
            ((rc == 1)) && grep -q 'ARMv6' <<<"$out" || { echo "preinst let an armv6l board install (rc $rc)"; return 1; }
        else
            ((rc == 0)) || { echo "preinst refused armv7l: $out"; return 1; }
        fi
    done
    # The address the postinst prints, from a config the user changed: its own part
    # only (the systemd part would act on this machine).
    printf 'listen = "0.0.0.0:8443"\ntls = "self-signed"\n' >"$tmp/changed.toml"
    out=$(sed -n '/^# Tell where to watch/,$p' "$dir/postinst" | sed "s|/etc/nalcast/nalcast.toml|$tmp/changed.toml|" | sh -s configure)
    grep -q "^nalcast: open https://.*\.local:8443/" <<<"$out" || { echo "postinst printed: $out"; return 1; }
    echo "preinst refuses armv6l and takes armv7l; prerm stops; postinst enables, restarts on upgrade, prints \"$(head -n 1 <<<"$out")\""
}

start_rtmp || fail "nginx with its RTMP module did not start (scripts/setup.sh --dist installs it): $(tail -n 2 "$tmp/nginx/out.log")"
for arch in ${DIST_ARCHES:-arm64 armhf amd64}; do
    bin="dist/nalcast-$version-linux-$arch"
    deb="dist/nalcast_$version-1_$arch.deb"
    if [[ ! -f $bin || ! -f $deb ]]; then
        fail "$arch: $bin or $deb missing: run make dist"
        continue
    fi
    check "$arch binary" binary_arch "$arch" "$bin"
    check "$arch highest glibc symbol <= GLIBC_$max_glibc" glibc_max "$bin"
    check "$arch needs only glibc's libraries" libraries "$bin"
    check "$arch .deb control ($(stat -c %s "$deb") bytes)" deb_fields "$arch" "$deb"
    check "$arch .deb contents" deb_contents "$arch" "$deb" "$bin"
    check "$arch .deb maintainer scripts" deb_scripts "$arch"
    check "$arch streams the test pattern, over WHEP too, and makes a snapshot${runner[$arch]:+ under ${runner[$arch]}} with the packaged config" \
        stream "$arch" "$bin" "$tmp/deb-$arch/etc/nalcast/nalcast.toml"
    check "$arch publishes to an RTMP server by itself${runner[$arch]:+ under ${runner[$arch]}}" publish "$arch" "$bin"
done

# systemd checks the unit as installed, its ExecStart pointed at a binary that runs here.
unit_verify() {
    local host_bin
    host_bin=$(command -v true)
    [[ -f dist/nalcast-$version-linux-amd64 ]] && host_bin="$PWD/dist/nalcast-$version-linux-amd64"
    sed "s|^ExecStart=/usr/bin/nalcast|ExecStart=$host_bin|" packaging/debian/nalcast.service >"$tmp/nalcast.service"
    systemd-analyze verify "$tmp/nalcast.service" || return 1
    echo "clean; exposure $(systemd-analyze security --offline=yes "$tmp/nalcast.service" 2>/dev/null | tail -n 1 | sed 's/.*exposure level for [^:]*: //')"
}
if command -v systemd-analyze >/dev/null; then
    check "systemd-analyze verify nalcast.service" unit_verify
else
    echo "skipped: systemd-analyze verify (no systemd-analyze here)"
fi

echo "dist-check: $passed passed, $failed failed"
((failed == 0))
