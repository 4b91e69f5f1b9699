#!/usr/bin/env bash
# Builds the Arcade Learning Environment (ALE) C++ library and installs it, with
# the Atari 2600 ROMs, into a project-local prefix (default .deps/ale):
#   .deps/ale/include/ale/...      headers (consumers need .deps/ale/include too)
#   .deps/ale/lib/libale.a         static library, no LTO
#   .deps/ale/lib/cmake/ale/       CMake package config
#   .deps/ale/roms/*.bin           ROMs (runtime/rl finds them here)
# Source: the ale-py sdist on PyPI (C++ sources and ROMs); nothing of it is
# committed. Idempotent: a stamp in the prefix makes a re-run a no-op.
#
# Environment: FWP_ALE_PREFIX (install prefix), FWP_ALE_JOBS (default 2).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ale_version="0.12.1"
prefix="${FWP_ALE_PREFIX:-$root/.deps/ale}"
jobs="${FWP_ALE_JOBS:-2}"
cache="$root/.deps/cache"            # the downloaded sdist (and wheel, if needed)
work="$root/.deps/ale-build"         # scratch, removed after a good install
stamp="$prefix/.fwp-ale-stamp"
# Everything that changes the installed result goes into the stamp.
stamp_text="ale-py $ale_version; RelWithDebInfo flags '-O3 -DNDEBUG' (no LTO); static; no SDL/Python; roms"

log() { echo "[setup_ale] $*"; }

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$stamp_text" ] \
   && [ -f "$prefix/lib/libale.a" ] && [ -f "$prefix/include/ale/ale_interface.hpp" ] \
   && [ -f "$prefix/roms/pong.bin" ] && [ -f "$prefix/roms/breakout.bin" ]; then
  log "ALE $ale_version present in $prefix"
  exit 0
fi

for tool in cmake ninja python3 g++; do
  command -v "$tool" >/dev/null || { echo "[setup_ale] error: '$tool' not found (run scripts/setup.sh)" >&2; exit 1; }
done

mkdir -p "$cache"
sdist="$cache/ale_py-$ale_version.tar.gz"
if [ ! -f "$sdist" ]; then
  # `pip download` of an sdist prepares its metadata, which with build
  # isolation would install the package's build requirements (jax among them,
  # from source under --no-binary). A throw-away venv holding only the build
  # backend lets pip prepare metadata without isolation.
  log "downloading the ale-py $ale_version sdist"
  rm -rf "$work/pip-venv"
  python3 -m venv "$work/pip-venv"
  "$work/pip-venv/bin/python" -m pip install -q "scikit-build-core>=0.10"
  "$work/pip-venv/bin/python" -m pip download -q --no-binary :all: --no-deps \
    --no-build-isolation "ale-py==$ale_version" -d "$cache.tmp"
  mv "$cache.tmp/ale_py-$ale_version.tar.gz" "$sdist"
  rm -rf "$cache.tmp"
fi

rm -rf "$work/src" "$work/build"
mkdir -p "$work/src"
tar -xzf "$sdist" -C "$work/src"
src="$work/src/ale_py-$ale_version"
[ -f "$src/src/ale/ale_interface.hpp" ] || { echo "[setup_ale] error: $sdist holds no src/ale/ale_interface.hpp" >&2; exit 1; }

launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi

# ALE's CMake turns on IPO (LTO) for every build type except RelWithDebInfo,
# and a static library of slim LTO objects only links with the same compiler
# in LTO mode. So: RelWithDebInfo, with its flags replaced by plain -O3.
log "configuring ALE (C++ library only, no SDL, no Python module)"
cmake -S "$src" -B "$work/build" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O3 -DNDEBUG" \
  -DBUILD_CPP_LIB=ON -DBUILD_PYTHON_LIB=OFF -DSDL_SUPPORT=OFF \
  -DBUILD_VECTOR_LIB=OFF -DBUILD_VECTOR_XLA_LIB=OFF \
  -DCMAKE_INSTALL_PREFIX="$prefix" -DCMAKE_INSTALL_LIBDIR=lib \
  "${launcher[@]}" >"$work/configure.log" 2>&1 \
  || { cat "$work/configure.log" >&2; exit 1; }

log "building ALE with -j$jobs (a few minutes, once)"
# Only what this script installs is removed (the prefix may be user-given).
rm -rf "$prefix/lib" "$prefix/include" "$prefix/roms" "$stamp"
ninja -C "$work/build" -j"$jobs" install >"$work/build.log" 2>&1 \
  || { tail -50 "$work/build.log" >&2; exit 1; }

# ROMs: the sdist carries them in the Python package's folder; older releases
# shipped them only in the wheel (ale_py/roms/).
mkdir -p "$prefix/roms"
if compgen -G "$src/src/ale/python/roms/*.bin" >/dev/null; then
  cp "$src"/src/ale/python/roms/*.bin "$prefix/roms/"
else
  log "the sdist has no ROMs; taking them from the ale-py $ale_version wheel"
  python3 -m pip download -q --only-binary :all: --no-deps "ale-py==$ale_version" -d "$cache/wheel"
  wheel="$(ls "$cache"/wheel/ale_py-"$ale_version"-*.whl | head -1)"
  python3 - "$wheel" "$prefix/roms" <<'EOF'
import sys, zipfile, os
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith("ale_py/roms/") and name.endswith(".bin"):
            with open(os.path.join(out, os.path.basename(name)), "wb") as f:
                f.write(z.read(name))
EOF
fi
[ -f "$prefix/roms/pong.bin" ] || { echo "[setup_ale] error: no ROMs installed into $prefix/roms" >&2; exit 1; }

echo "$stamp_text" >"$stamp"
rm -rf "$work"
log "installed ALE $ale_version into $prefix ($(ls "$prefix/roms" | wc -l) ROMs)"
