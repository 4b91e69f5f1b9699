#!/usr/bin/env bash
# README command (1): install what is missing, build, compile the paper's
# layers into .fwpk artifacts, then train a small Delta Net model with the
# compiled layer on code execution (CPU, a few minutes) and evaluate it.
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
echo "== train: code execution (3 variables), Delta Net compiled by fwp-compile"
cd "$root"
run_dir=runs/readme_codeexec
rm -rf "$run_dir"   # each run of this command starts afresh
"$build/runtime/train/fwp-train" --config models/configs/codeexec_small.toml \
  --artifact "$artifacts/delta_net.fwpk" --run-dir "$run_dir" "$@"
echo "== evaluate the best checkpoint on the test split"
"$build/runtime/train/fwp-eval" --checkpoint "$run_dir/best.pt" --split test
