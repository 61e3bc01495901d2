#!/usr/bin/env bash
# Every test nalcast has: formatting, lints, Rust unit/property/integration tests,
# and the end-to-end tests in a real headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."

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
echo "== cargo test"
cargo test --workspace
echo "== browser end-to-end tests"
cargo build --quiet -p nalcast -p nalcast-bench
mkdir -p test-output
(cd web && NALCAST_BIN="$PWD/../target/debug/nalcast" node --test --test-reporter=spec test/*.test.mjs)
