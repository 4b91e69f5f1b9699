#!/usr/bin/env bash
# README command (1): install what is missing, build, compile the paper's
# layers into .fwpk artifacts and show what the compiler made of them.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${FWP_BUILD_DIR:-$root/build}"
bash "$root/scripts/setup.sh"
bash "$root/scripts/build.sh"
artifacts="$build/artifacts"
mkdir -p "$artifacts"
for model in "$root"/models/*.mlir; do
  name=$(basename "$model" .mlir)
  echo "== $name: verify, differentiate, compile"
  "$build/bin/fwp-opt" "$model" > /dev/null
  "$build/bin/fwp-compile" "$model" -o "$artifacts/$name.fwpk"
  echo "   $artifacts/$name.fwpk ($(stat -c %s "$artifacts/$name.fwpk") bytes)"
done
echo "== the backward scan of delta_net, as fwp-differentiate builds it"
"$build/bin/fwp-compile" "$root/models/delta_net.mlir" --emit=mlir -o - |
  sed -n '/@delta_net_grad/,/^  }/p'
