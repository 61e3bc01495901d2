#!/usr/bin/env bash
# Every test nalcast has: formatting, lints, dependency checks, the Rust tests
# (unit, property and end to end against the real binary, run at once by
# cargo-nextest), and the page's tests (pure ones in node, then in a real headless
# Chromium). Each step says how long it took.
#   scripts/test.sh          everything (`make test`)
#   scripts/test.sh --fast   only what runs in seconds, for while editing
#                            (`make test-fast`: no clippy, no end-to-end or browser tests)
set -euo pipefail
cd "$(dirname "$0")/.."
# `make test` installed everything (scripts/setup.sh --test): a test that would skip
# for a missing tool (nginx-rtmp, GStreamer's RTSP server) fails instead.
export NALCAST_REQUIRE_ALL=1

# shellcheck source=scripts/lib/steps.sh
source scripts/lib/steps.sh

if [[ "${1:-}" == "--fast" ]]; then
    step "cargo fmt"
    cargo fmt --all -- --check
    step "fast tests: unit and property tests, no end-to-end binary (cargo nextest)"
    cargo nextest run --workspace --no-fail-fast -E 'not binary(e2e)'
    step "page: unit tests (node)"
    (cd web && node --test --test-reporter=dot test/unit/*.test.mjs)
    step "done in $((SECONDS - started)) s"
    exit 0
fi

step "cargo fmt"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
step "cargo deny (licenses, bans, sources; its warnings shown)"
cargo deny --log-level warn check licenses bans sources
# The RustSec database comes from GitHub, which is not reachable everywhere.
if compgen -G "$HOME/.cargo/advisory-dbs/*/crates" >/dev/null; then
    cargo deny --offline --log-level error check advisories
else
    echo "cargo deny: advisories not checked: no RustSec database in ~/.cargo/advisory-dbs (run 'cargo deny fetch' where github.com is reachable)"
fi
step "the structure the crates promise (scripts/check-structure.sh)"
scripts/check-structure.sh
step "a build without Broadway.js refuses and names the fix (as a packager would build a clean clone)"
clone=$(mktemp -d)
trap 'rm -rf "$clone"' EXIT
git clone --quiet . "$clone/nalcast"
if CARGO_TARGET_DIR="$PWD/target" cargo check --quiet --locked -p nalcast \
    --manifest-path "$clone/nalcast/Cargo.toml" 2>"$clone/err"; then
    echo "FAILED: a clone without web/node_modules built a binary whose page cannot decode" >&2
    exit 1
fi
if ! grep -q 'Broadway.js is missing.*run `make setup` once' "$clone/err"; then
    echo "FAILED: the build failed without naming the fix:" >&2
    cat "$clone/err" >&2
    exit 1
fi
echo "ok: $(grep -o 'Broadway.js is missing.*' "$clone/err")"
step "Rust tests (cargo nextest: .config/nextest.toml says how many at once)"
cargo nextest run --workspace --no-fail-fast
step "the packaged settings file names every option (packaging/nalcast.toml)"
packaging/tools/conffile.py --check
step "page: unit tests (node)"
(cd web && node --test --test-reporter=dot test/unit/*.test.mjs)
# The browser tests mostly wait on the page and the server: two files at a time
# (three took 50 s instead of 55 s, and once let Chromium drop a quarter of an MSE
# stream's frames; four made the busiest miss their deadlines). Those in
# browser-alone/ measure how fast the page decodes, or decode four cameras at once
# in the grid (beside it, the MSE test dropped 39 of 142 frames), and run by
# themselves, as do the WebRTC test (its 720p decoding beside the MSE tests made
# Chromium drop a quarter of their frames), the MSE and SPS-ids MSE tests and the hls.js test
# (a fresh clone's run of the two side by side: 36 of 127 MSE frames dropped, and
# hls.js showing a frame number go back; the B-frame MSE test beside another: 32 of 77
# dropped).
# The binaries are the ones the Rust tests ran (cargo nextest built them with the
# tests' features; a separate `cargo build` would build everything again).
step "page: end to end in headless Chromium"
mkdir -p test-output
(cd web && NALCAST_BIN="$PWD/../target/debug/nalcast" node --test --test-reporter=spec \
    --test-concurrency=2 test/browser/*.test.mjs)
step "page: end to end in headless Chromium, each alone"
(cd web && NALCAST_BIN="$PWD/../target/debug/nalcast" node --test --test-reporter=spec \
    test/browser-alone/*.test.mjs)
step "all tests passed in $((SECONDS - started)) s"
