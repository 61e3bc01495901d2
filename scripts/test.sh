#!/usr/bin/env bash
# Every test nalcast has: formatting, lints, Rust unit/property/integration tests,
# and the end-to-end tests in a real headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
# `make test` installed everything (scripts/setup.sh --test): a test that would skip
# for a missing tool (nginx-rtmp, GStreamer's RTSP server) fails instead.
export NALCAST_REQUIRE_ALL=1

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo deny"
cargo deny --log-level error check licenses bans sources
# The RustSec database comes from GitHub, which is not reachable everywhere.
if compgen -G "$HOME/.cargo/advisory-dbs/*/crates" >/dev/null; then
    cargo deny --offline --log-level error check advisories
else
    echo "cargo deny: advisories skipped: no RustSec database in ~/.cargo/advisory-dbs (run 'cargo deny fetch' where github.com is reachable)"
fi
echo "== a build without Broadway.js refuses and names the fix (as a packager would build a clean clone)"
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
echo "== cargo test"
cargo test --workspace
echo "== the packaged settings file names every option (packaging/nalcast.toml)"
packaging/tools/conffile.py --check
echo "== browser end-to-end tests"
cargo build --quiet -p nalcast -p nalcast-bench
mkdir -p test-output
(cd web && NALCAST_BIN="$PWD/../target/debug/nalcast" node --test --test-reporter=spec test/*.test.mjs)
