#!/usr/bin/env bash
# Reduced-budget CPU results for docs/results.md (issue: algorithmic tasks):
# every paper model (compiled layers) and the LSTM / Transformer baselines on
# ListOps depth 10 and code execution with 3 variables.
#
#   bash scripts/results_algorithmic.sh [JOBS]      # JOBS parallel runs (default 2)
#
# Needs a build (scripts/build.sh) and the compiled layers in build/artifacts
# (scripts/main.sh makes them). Writes runs/results/<task>_<model>/ and prints
# the test accuracy of each best-on-validation checkpoint. Budget and sizes:
# docs/results-algorithmic.md.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${FWP_BUILD_DIR:-$root/build}"
jobs="${1:-2}"
cd "$root"
for model in linear_transformer delta_net delta_mlp delta_rnn delta_lstm rdn; do
  [ -f "$build/artifacts/$model.fwpk" ] ||
    "$build/bin/fwp-compile" "models/$model.mlir" -o "$build/artifacts/$model.fwpk"
done
common="--set model.layers=2 --set model.hidden=64 --set model.dropout=0.0 --set train.batch=32 --set train.lr=1e-3 --threads 1 --plain"
runs=()
for model in lstm transformer linear_transformer delta_net delta_rnn rdn delta_mlp delta_lstm; do
  runs+=("listops10 $model 1500 250")
done
for model in lstm transformer linear_transformer delta_net delta_rnn rdn delta_mlp delta_lstm; do
  runs+=("codeexec3 $model 600 200")
done
run_one() {
  read -r task model steps every <<<"$1"
  local size="--set model.heads=4"
  [ "$model" = lstm ] && size="--set model.embedding=64"
  local dir="runs/results/${task}_${model}"
  mkdir -p "$dir"
  if [ -f "$dir/done" ]; then echo "$task $model: done already"; return; fi
  echo "$task $model: $steps steps -> $dir"
  # shellcheck disable=SC2086
  nice -n 10 "$build/runtime/train/fwp-train" --config "models/configs/${task}_${model}.toml" \
    $size $common --steps "$steps" --set train.eval_every="$every" --run-dir "$dir" --overwrite \
    --set data.dir="data/$task" > "$dir/log.txt" 2>&1 && touch "$dir/done"
  echo "$task $model: $(grep '^test' "$dir/log.txt" | tail -1)"
}
export -f run_one
export build common
# Generate each data set once before the parallel runs share it.
for task in listops10 codeexec3; do
  [ -f "data/$task/test.txt" ] ||
    "$build/runtime/train/fwp-train" gen-data --config "models/configs/${task}_lstm.toml" \
      --out "data/$task"
done
printf '%s\n' "${runs[@]}" | xargs -P "$jobs" -I{} bash -c 'run_one "$@"' _ {}
