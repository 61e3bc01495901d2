#!/usr/bin/env bash
# Runs every fuzz target for FUZZ_SECONDS (default 60) each; crashes land in
# fuzz/artifacts/<target>/ — add each as a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz (one-time, a few minutes)"
    cargo install cargo-fuzz --locked --quiet
fi
# cargo-fuzz passes nightly-only sanitizer flags; the stable compiler accepts them
# with RUSTC_BOOTSTRAP (there is no nightly toolchain to fetch here).
export RUSTC_BOOTSTRAP=1
for target in $(cargo fuzz list); do
    echo "fuzz: $target for $seconds s"
    mkdir -p fuzz/logs
    if ! cargo fuzz run "$target" -- -max_total_time="$seconds" -print_final_stats=1 > "fuzz/logs/$target.log" 2>&1; then
        grep -E "panicked|assertion|left:|right:|Test unit written" "fuzz/logs/$target.log" | head -n 20
        echo "fuzz: $target found a crash (input in fuzz/artifacts/$target/): add it to crates/h264/tests/fuzz_regressions.rs" >&2
        exit 1
    fi
    grep -E "^stat::|Done [0-9]+ runs" "fuzz/logs/$target.log" | head -n 8
done
