#!/usr/bin/env bash
# Configures and builds fwp (compiler + runtime, whatever this machine has)
# into build/: everything (`all`) and the benchmarks (`benchmarks`, not part
# of `all`; FWP_BENCHMARKS=0 leaves them out, as scripts/test.sh does: no
# test needs them). Used by scripts/test.sh and scripts/main.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${FWP_BUILD_DIR:-$root/build}"
jobs="${FWP_JOBS:-$(nproc)}"
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}"
if [ ! -f "$build/build.ninja" ]; then
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
elif [ $# -gt 0 ]; then
  cmake "$build" "$@"
fi
# Re-run CMake first if a CMakeLists.txt changed, so that the target list is current.
ninja -C "$build" build.ninja >/dev/null
targets=(all)
if [ "${FWP_BENCHMARKS:-1}" = 1 ] && ninja -C "$build" -t query benchmarks >/dev/null 2>&1; then
  targets+=(benchmarks)
fi
ninja -C "$build" -j"$jobs" "${targets[@]}"
