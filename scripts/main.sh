#!/usr/bin/env bash
# README command (1): install what is missing, build, compile the paper's
# layers into .fwpk artifacts, then train a small Delta Net model with the
# compiled layer on short code-execution programs (CPU, at most ~5 minutes on
# 2 cores), evaluate it on the test split and draw its learning curves.
# Extra arguments go to fwp-train (e.g. --steps 100 for a quick look).
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

cd "$root"
config=models/configs/codeexec_readme.toml
run_dir=runs/readme_codeexec
echo "== train: code execution (short programs), Delta Net compiled by fwp-compile"
echo "   $config: the model reads a program token by token and must output every printed value"
rm -rf "$run_dir"   # each run of this command starts afresh
"$build/runtime/train/fwp-train" --config "$config" \
  --artifact "$artifacts/delta_net.fwpk" --run-dir "$run_dir" "$@"

echo "== evaluate the best checkpoint on the test split"
"$build/runtime/train/fwp-eval" --checkpoint "$run_dir/best.pt" --split test --json \
  > "$run_dir/eval_test.json"
"$root/.venv/bin/python" - "$run_dir/eval_test.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"test (1000 programs not seen in training): sequence accuracy {100 * m['acc']:.1f} %"
      f" (every printed value of a program right), printed values right"
      f" {100 * m['print_acc']:.1f} %")
PY

echo "== learning curves"
"$root/tools/fwp-plot/fwp-plot" "$run_dir" --name "Delta Net (compiled)" \
  --title "README command (1): code execution, $(basename "$config" .toml)" |
  sed 's/^/   /'
