#!/usr/bin/env bash
# Installs what nalcast needs, only what is missing, quietly when all is present.
#   scripts/setup.sh          for building and running (nasm, Node.js packages)
#   scripts/setup.sh --test   also what the tests and benchmarks need (Chromium, ffmpeg,
#                             GStreamer's RTSP server, nginx with its RTMP module,
#                             Varnish, ethtool)
#   scripts/setup.sh --dist   also what `make dist` / `make dist-check` need (Rust
#                             targets, zig, cargo-zigbuild, cargo-deb, qemu-user)
set -euo pipefail
cd "$(dirname "$0")/.."

want=(nasm nodejs npm pkg-config)
if [[ "${1:-}" == "--test" ]]; then
    # nginx and its RTMP module: the media server the --publish tests push to (run
    # by the tests themselves as a child with their own config, never as a service).
    want+=(chromium ffmpeg nginx libnginx-mod-rtmp)
    # HTTP caches in front of LL-HLS (scripts/hls-cache.sh, in `make bench` and tests)
    want+=(varnish curl)
    # scripts/slow-link.sh turns segmentation offloads off on its namespace's
    # loopback, so the shaper sees packets of one MTU (iproute2 is there already).
    want+=(ethtool)
    # The qemu smoke test runs the server under qemu-user, as make dist-check runs
    # the Raspberry Pi builds (a kernel that answers TCP_INFO short).
    want+=(qemu-user)
    # The doc test validates every proxy configuration the docs show: the
    # Caddyfile of docs/security.md with Caddy's own parser.
    want+=(caddy)
    # The RTSP tests run GStreamer's RTSP server (Python bindings) as the camera;
    # x264enc is in -ugly.
    want+=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base
        gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad)
    # Home Assistant's generic camera reads a stream URL with PyAV: the
    # integration test opens the LL-HLS URL with it.
    want+=(python3-av)
fi
if [[ "${1:-}" == "--dist" ]]; then
    # qemu-user and the ARM C libraries run the ARM binaries in `make dist-check`;
    # the build itself needs no cross compiler (zig is one), pip installs zig.
    want+=(python3 python3-pip binutils file ffmpeg qemu-user libc6-arm64-cross libc6-armhf-cross)
    # Each binary publishes to nginx's RTMP module in `make dist-check`: nalcast's own
    # RTMP client on this architecture.
    want+=(nginx libnginx-mod-rtmp)
fi

missing=()
for pkg in "${want[@]}"; do
    # Node.js may come from elsewhere (nvm, NodeSource): a working command is enough.
    case "$pkg" in
        nodejs) command -v node >/dev/null && continue ;;
        npm) command -v npm >/dev/null && continue ;;
        chromium) [[ -x /usr/bin/chromium ]] && continue ;;
    esac
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # The tests start their own nginx, Varnish and Caddy: the system services
    # the packages just started (ports 80 and 6081) are not wanted.
    for svc in nginx varnish caddy; do
        if [[ " ${missing[*]} " == *" $svc"* ]] && [[ -d /run/systemd/system ]]; then
            $sudo systemctl disable --now "$svc" >/dev/null 2>&1 || true
        fi
    done
fi

if ! command -v cargo >/dev/null; then
    echo "setup: Rust is missing: install it with rustup (https://rustup.rs), then run this again" >&2
    exit 1
fi
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        echo "setup: adding rustup component $component"
        rustup component add "$component" >/dev/null
    fi
done

# cargo-deny checks the dependencies in `make test`; cargo-nextest runs the Rust
# tests several at once. Built from source once each where missing (minutes).
if [[ "${1:-}" == "--test" ]]; then
    for tool in "deny cargo-deny" "nextest cargo-nextest"; do
        read -r command crate <<<"$tool"
        if ! cargo "$command" --version >/dev/null 2>&1; then
            echo "setup: installing $crate (one-time build, a few minutes)"
            cargo install "$crate" --locked --quiet
        fi
    done
fi

if [[ "${1:-}" == "--dist" ]]; then
    # Versions known to work together: zig links against an old glibc
    # (TARGET.2.31) where Debian's cross compilers could only use their own 2.36.
    # zig lives in a folder of its own, so no Python environment is touched.
    zig_dir="${XDG_CACHE_HOME:-$HOME/.cache}/nalcast/zig-0.17.1"
    if [[ ! -x "$zig_dir/ziglang/zig" ]]; then
        echo "setup: installing zig 0.17.1 (PyPI package ziglang) into $zig_dir"
        python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
            --target "$zig_dir" ziglang==0.17.1 2>&1 | grep -v "Running pip as the 'root' user" >&2 || true
        [[ -x "$zig_dir/ziglang/zig" ]] || { echo "setup: zig did not install" >&2; exit 1; }
    fi
    installed_targets=$(rustup target list --installed)
    for target in aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf; do
        if ! grep -qx "$target" <<<"$installed_targets"; then
            echo "setup: adding rustup target $target"
            rustup target add "$target" >/dev/null
        fi
    done
    for tool in "cargo-zigbuild 0.24.1" "cargo-deb 3.8.0"; do
        read -r name version <<<"$tool"
        if ! "$name" --version 2>/dev/null | grep -qF "$version"; then
            echo "setup: installing $name $version (one-time build, a few minutes)"
            cargo install "$name" --version "$version" --locked --quiet
        fi
    done
fi

# The WHEP tests' third-party WebRTC client (make test, and make dist-check under
# qemu): aiortc, in a venv of its own.
if [[ "${1:-}" == "--test" || "${1:-}" == "--dist" ]]; then
    scripts/setup-webrtc-client.sh
fi

# Node.js packages (Broadway.js for the page, playwright-core for the browser tests),
# reinstalled only when the lockfile changed.
if [[ ! -f web/node_modules/.package-lock.json || web/package-lock.json -nt web/node_modules/.package-lock.json ]]; then
    echo "setup: installing web packages"
    (cd web && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
