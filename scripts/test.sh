#!/usr/bin/env bash
# README command (2): install what is missing, build everything, run every
# test (lit tests of the compiler and GoogleTest suites of the runtime) with
# one ctest. GPU tests skip (reported as skipped) on machines without a GPU.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${FWP_BUILD_DIR:-$root/build}"
start=$(date +%s)
bash "$root/scripts/setup.sh"
# The benchmarks (`ninja benchmarks`) are no test's business: not built here.
FWP_BENCHMARKS="${FWP_BENCHMARKS:-0}" bash "$root/scripts/build.sh"
echo "[test] built in $(( $(date +%s) - start )) s"
ctest --test-dir "$build" --output-on-failure -j"${FWP_JOBS:-$(nproc)}" "$@"
# The GPU kit's dry run (docs/gpu.md): bundle -> runtime-only build from the
# bundle alone -> its CPU tests; offline (--ci), bounded in time. Only for the
# whole suite, and only where the compiler was built.
if [ $# -eq 0 ] && [ "${FWP_GPU_DRY_RUN:-1}" = 1 ] &&
   ninja -C "$build" -t query fwp-compile >/dev/null 2>&1; then
  dry_start=$(date +%s)
  timeout -k 30 1800 bash "$root/scripts/gpu_check.sh" --dry-run --ci "$build/gpu-dry-run"
  echo "[test] GPU kit dry run: $(( $(date +%s) - dry_start )) s"
fi
echo "[test] total $(( $(date +%s) - start )) s"
