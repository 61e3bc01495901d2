#!/usr/bin/env bash
# Release artefacts for the Raspberry Pi (and x86-64), built on this machine:
#   dist/nalcast-VERSION-linux-{arm64,armhf,amd64}   stripped binaries
#   dist/nalcast_VERSION-1_{arm64,armhf,amd64}.deb   Debian packages (systemd service)
# cargo-zigbuild links against glibc 2.31 (TARGET.2.31), so the binaries run on
# Raspberry Pi OS Bullseye (glibc 2.31) and Bookworm (2.36) alike; `make dist-check`
# checks that and streams from each. Run through `make dist` (installs the tools).
#   DIST_ARCHES="arm64 armhf"   build only these
set -euo pipefail
cd "$(dirname "$0")/.."

export PATH="${XDG_CACHE_HOME:-$HOME/.cache}/nalcast/zig-0.17.1/ziglang:$PATH"
# Stripped by the linker (cargo-deb then knows not to strip again, which it
# could not do for ARM here); no debug info is built at all.
export CARGO_PROFILE_RELEASE_STRIP=symbols CARGO_PROFILE_RELEASE_DEBUG=false
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
version=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "nalcast"))')
glibc=2.31

packaging/tools/conffile.py --check

# Each step says when it starts and how long it took (the ARM builds take minutes).
# shellcheck source=scripts/lib/steps.sh
source scripts/lib/steps.sh

declare -A triple=(
    [arm64]=aarch64-unknown-linux-gnu
    [armhf]=armv7-unknown-linux-gnueabihf
    [amd64]=x86_64-unknown-linux-gnu
)
mkdir -p dist
for arch in ${DIST_ARCHES:-arm64 armhf amd64}; do
    target=${triple[$arch]:?"unknown arch $arch (arm64, armhf, amd64)"}
    step "$arch: cargo zigbuild --release --target $target.$glibc (minutes)"
    cargo zigbuild --release --locked --quiet -p nalcast --target "$target.$glibc"
    cp "$target_dir/$target/release/nalcast" "dist/nalcast-$version-linux-$arch"
    rm -f dist/nalcast_*_"$arch".deb
    step "$arch: cargo deb"
    cargo deb --locked --quiet -p nalcast --target "$target" --no-build --output dist/ >/dev/null
done
step "SHA256SUMS"
(cd dist && sha256sum nalcast-* nalcast_*.deb > SHA256SUMS)
step "done in $((SECONDS - started)) s"
ls -l dist
