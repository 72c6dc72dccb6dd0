#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for FUZZ_SECONDS (default 20) each on the stable
# toolchain and fails on the first crash, timeout or out-of-memory. A crash leaves its
# input in fuzz/artifacts/<target>/; reproduce it with
#   cargo fuzz run -s none --dev <target> fuzz/artifacts/<target>/<file>
#
# `-s none`: no sanitizer, so stable rustc works (ASan needs nightly or RUSTC_BOOTSTRAP=1).
# `--dev`: debug builds with overflow checks, quicker to compile on CI; the hot crates are
# optimised through fuzz/Cargo.toml.
set -euo pipefail

CARGO_FUZZ_VERSION=0.13.2
FUZZ_SECONDS=${FUZZ_SECONDS:-20}
cd "$(dirname "$0")/.."

if [[ "$(cargo fuzz --version 2>/dev/null || true)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

targets=$(cargo fuzz list)
cargo fuzz build -s none --dev
for target in $targets; do
    echo "fuzz: $target for ${FUZZ_SECONDS}s"
    # The corpus lives in fuzz/corpus/<target> (ignored by git) so local runs build on
    # earlier ones; -rss_limit_mb and -malloc_limit_mb turn over-allocation into a failure.
    cargo fuzz run -s none --dev "$target" -- \
        -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 -malloc_limit_mb=512 \
        -timeout=10 -print_final_stats=1 2>&1 | tail -n 30
    status=${PIPESTATUS[0]}
    if [[ $status -ne 0 ]]; then
        echo "fuzz: $target FAILED (exit $status); the input is in fuzz/artifacts/$target/" >&2
        exit 1
    fi
done
echo "fuzz: all targets ran ${FUZZ_SECONDS}s each without a crash"
