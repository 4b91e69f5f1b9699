#!/usr/bin/env bash
# README command (2): install what is missing, build everything, run every
# test (lit tests of the compiler and GoogleTest suites of the runtime) with
# one ctest. GPU tests skip (reported as skipped) on machines without a GPU.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${FWP_BUILD_DIR:-$root/build}"
start=$(date +%s)
bash "$root/scripts/setup.sh"
bash "$root/scripts/build.sh"
echo "[test] built in $(( $(date +%s) - start )) s"
ctest --test-dir "$build" --output-on-failure -j"${FWP_JOBS:-$(nproc)}" "$@"
echo "[test] total $(( $(date +%s) - start )) s"
