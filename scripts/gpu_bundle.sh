#!/usr/bin/env bash
# Makes the GPU bundle (docs/gpu.md): one tarball with everything a GPU
# machine without MLIR, network or Debian dev packages needs for
# scripts/gpu_check.sh. Run here, after scripts/build.sh (a build with the
# compiler).
#
#   scripts/gpu_bundle.sh [--out FILE] [--no-wheels] [--no-corpus]
#
# Default FILE: build-gpu-kit/fwp-gpu-bundle.tar.gz (under the ignored
# build*/ folders, so the device tool can carry build-gpu-kit). Contents:
#   artifacts/      the compiled runtime tests' .fwpk files (this build's
#                   runtime/compiled/artifacts; -DFWP_PREBUILT_ARTIFACTS there)
#   bench/          the GPU benchmark's .fwpk: delta_net d=16,32,64,128,
#                   every model at d=16,32 (build/bench/artifacts)
#   models/         every models/*.mlir compiled at its own dims (fwp-train, fwp-lm)
#   cuda-kernels/   the kernel bundles of the core.cuda tests (FWP_CUDA_KERNELS)
#   deps/include/   toml++, CLI11, nlohmann-json, gloo headers; deps/googletest/
#                   GoogleTest's sources (-DFWP_DEPS_DIR=<bundle>/deps)
#   wheels/         flash-linear-attention + fla-core from PyPI (the benchmark's
#                   peer; --no-wheels leaves them out: no network needed)
#   data/austen/    the fwp-lm corpus (scripts/make_corpus.sh; --no-corpus)
#   MANIFEST.txt    commit, date, models that failed to compile, sha256 of every file
# Every .fwpk is compiled for sm_90 (fwp-compile's default --cuda-chip) and
# treated as an opaque file. The tarball must stay under 60 MiB (the device
# tool carries at most 64 MiB with the working tree); larger is an error.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${FWP_BUILD_DIR:-$root/build}"
out="$root/build-gpu-kit/fwp-gpu-bundle.tar.gz"
wheels=1
corpus=1
FLA_VERSION="${FWP_FLA_VERSION:-0.6.0}"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --no-wheels) wheels=0; shift ;;
    --no-corpus) corpus=0; shift ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "gpu_bundle: error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
say() { echo "[gpu_bundle] $*"; }
die() { echo "gpu_bundle: error: $*" >&2; exit 1; }

compile="$build/bin/fwp-compile"
[ -f "$build/build.ninja" ] || die "no build in $build: run scripts/build.sh first"
ninja -C "$build" -t query fwp-compile >/dev/null 2>&1 ||
  die "$build has no fwp-compile (a build with the compiler, MLIR 22, is needed)"
start=$(date +%s)
say "building the artifacts and kernel bundles in $build"
ninja -C "$build" fwp-compile fwp_test_artifacts fwp_cuda_kernels fwp_bench_artifacts >/dev/null ||
  die "ninja -C $build fwp-compile fwp_test_artifacts fwp_cuda_kernels fwp_bench_artifacts failed"

mkdir -p "$(dirname "$out")"
stage="$(mktemp -d "$(dirname "$out")/stage.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{artifacts,bench,models,deps/include,wheels,data}

cp "$build"/runtime/compiled/artifacts/*.fwpk "$stage/artifacts/"
cp "$build"/bench/artifacts/*.fwpk "$stage/bench/"
cp -r "$build/cuda-kernels" "$stage/cuda-kernels"

# Every model of models/ at its own dims: the build's own (build/artifacts,
# target fwp_artifacts: the same fwp-compile command) when it is newer than
# the model and fwp-compile, else compiled here and cached next to the build.
# A model that does not compile is listed in MANIFEST.txt (and reported),
# the rest of the bundle is made.
cache="$build/gpu-bundle-models"
mkdir -p "$cache"
failed=()
for mlir in "$root"/models/*.mlir; do
  name="$(basename "$mlir" .mlir)"
  fwpk="$build/artifacts/$name.fwpk"
  if [ ! "$fwpk" -nt "$mlir" ] || [ ! "$fwpk" -nt "$compile" ]; then
    fwpk="$cache/$name.fwpk"
  fi
  if [ ! "$fwpk" -nt "$mlir" ] || [ ! "$fwpk" -nt "$compile" ]; then
    if ! "$compile" "$mlir" -o "$fwpk.tmp" > "$cache/$name.log" 2>&1; then
      say "warning: fwp-compile $name failed (see $cache/$name.log)"
      failed+=("$name")
      rm -f "$fwpk.tmp" "$fwpk"
      continue
    fi
    mv "$fwpk.tmp" "$fwpk"
  fi
  cp "$fwpk" "$stage/models/"
done

# Headers and GoogleTest's sources: what a runtime-only build includes
# beyond LibTorch and the C++ library (runtime/CMakeLists.txt, FWP_DEPS_DIR).
for dir in toml++ CLI nlohmann gloo; do
  [ -d "/usr/include/$dir" ] || die "/usr/include/$dir is missing (scripts/setup.sh installs it)"
  cp -rL "/usr/include/$dir" "$stage/deps/include/"
done
gtest=/usr/src/googletest
[ -f "$gtest/CMakeLists.txt" ] || die "$gtest is missing (the googletest package)"
mkdir -p "$stage/deps/googletest/googletest"
cp "$gtest/CMakeLists.txt" "$stage/deps/googletest/"
for part in CMakeLists.txt cmake include src; do
  cp -rL "$gtest/googletest/$part" "$stage/deps/googletest/googletest/"
done

if [ "$wheels" = 1 ]; then
  whl="$root/.whl/fla-$FLA_VERSION"
  if ! ls "$whl"/fla_core-*.whl "$whl"/flash_linear_attention-*.whl >/dev/null 2>&1; then
    say "pip download flash-linear-attention==$FLA_VERSION fla-core==$FLA_VERSION (no deps)"
    mkdir -p "$whl"
    python3 -m pip download -q --no-deps --only-binary=:all: -d "$whl" \
      "flash-linear-attention==$FLA_VERSION" "fla-core==$FLA_VERSION" ||
      die "pip download of the fla wheels failed (no network? --no-wheels leaves them out)"
  fi
  cp "$whl"/*.whl "$stage/wheels/"
fi

if [ "$corpus" = 1 ]; then
  if [ ! -f "$root/data/austen/wiki.train.tokens" ]; then
    say "making the Austen corpus (scripts/make_corpus.sh)"
    bash "$root/scripts/make_corpus.sh" "$root/data/austen" >/dev/null
  fi
  mkdir -p "$stage/data/austen"
  cp "$root"/data/austen/wiki.{train,valid,test}.tokens "$stage/data/austen/"
fi

{
  echo "fwp GPU bundle (scripts/gpu_bundle.sh; docs/gpu.md)"
  echo "commit: $(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "made: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
  echo "chip: sm_90 (fwp-compile --cuda-chip default)"
  echo "fla: $([ "$wheels" = 1 ] && echo "$FLA_VERSION" || echo 'not bundled (--no-wheels)')"
  echo "corpus: $([ "$corpus" = 1 ] && echo data/austen || echo 'not bundled (--no-corpus)')"
  echo "models that failed to compile: ${failed[*]:-none}"
  echo "files:"
  (cd "$stage" && find . -type f ! -name MANIFEST.txt -print0 | sort -z | xargs -0 sha256sum)
} > "$stage/MANIFEST.txt"

tar -C "$stage" -czf "$out.tmp" .
mv "$out.tmp" "$out"
bytes=$(stat -c %s "$out")
limit=$((60 * 1024 * 1024))
say "$out: $((bytes / 1024)) KiB ($(find "$stage" -type f | wc -l) files; $(du -sk "$stage" | cut -f1) KiB unpacked) in $(( $(date +%s) - start )) s"
[ "$bytes" -le "$limit" ] || die "$out is $bytes bytes, over the 60 MiB the device tool can carry"
[ ${#failed[@]} -eq 0 ] || say "warning: not in the bundle: ${failed[*]}"
