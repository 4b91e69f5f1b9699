#!/usr/bin/env bash
# The one-command GPU check (docs/gpu.md). On a GPU machine (no MLIR, no
# network, no Debian dev packages), from the bundle of scripts/gpu_bundle.sh:
#
#   scripts/gpu_check.sh [--quick] [--bundle FILE] OUT_DIR
#
#   probe      nvidia-smi, torch.cuda, compilers, compute-sanitizer       (20 s)
#   build      unpack the bundle; runtime-only CMake build (FWP_ENABLE_COMPILER=OFF,
#              FWP_ENABLE_CUDA=ON, every core) of the GPU targets
#   tests      every GPU test (ctest -R 'cuda|Cuda|RequireGpu') with FWP_REQUIRE_GPU=1:
#              a skip is a failure; and at least one GPU test of each kind must pass
#   sanitizer  compute-sanitizer memcheck, racecheck, synccheck over a reduced
#              subset of the kernel tests
#   train      fwp-train (code execution) and fwp-lm (Austen) on CUDA with the
#              compiled delta_net: the loss falls, and the first 5 steps match a
#              CPU run of the same config within 2e-3 * max(1, |loss|)
#   bench      bench/gpu_bench.py: fwp vs fla (fused_recurrent f32, chunk bf16)
#              and the eager reference (docs/benchmarks.md)
#
# Every stage runs under `timeout` with its budget (printed first), writes its
# log into OUT_DIR, and a failing stage does not stop the others. OUT_DIR gets
# at most 8 files: summary.json probe.log build.log tests.log sanitizer.log
# train.log bench.log bench.json. Exit status 0 only when every stage passed.
# --quick fits in 6 minutes (fewer steps, a smaller sanitizer subset, fewer
# benchmark cases), the full run in 9.
#
#   scripts/gpu_check.sh --dry-run [--ci] OUT_DIR
#
# here (no GPU): makes the bundle (--ci: without the PyPI wheels and the
# corpus, i.e. offline), unpacks it into an empty folder, builds the same
# runtime-only configuration from it at -O1 (headers and GoogleTest from the
# bundle only, MLIR off, LibTorch from the venv), checks that no header came from
# the system's toml++/CLI11/nlohmann/gtest, runs the kit's CPU tests (core.cuda.*,
# RequireGpu, the compiled-layer artifact tests, the benchmark's operator
# library on CPU tensors). OUT_DIR: summary.json bundle.log build.log tests.log.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mode=full
dry=0
ci=0
bundle="$root/build-gpu-kit/fwp-gpu-bundle.tar.gz"
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) mode=quick; shift ;;
    --dry-run) dry=1; shift ;;
    --ci) ci=1; shift ;;
    --bundle) bundle="$(realpath -m "$2")"; shift 2 ;;
    -h|--help) sed -n '2,38p' "$0"; exit 0 ;;
    -*) echo "gpu_check: error: unknown option '$1' (see --help)" >&2; exit 2 ;;
    *) [ -z "$out" ] || { echo "gpu_check: error: one OUT_DIR only" >&2; exit 2; }
       out="$1"; shift ;;
  esac
done
[ -n "$out" ] || { echo "gpu_check: error: OUT_DIR is required (see --help)" >&2; exit 2; }
mkdir -p "$out" || exit 2
out="$(cd "$out" && pwd)"
jobs="$(nproc)"
t0=$(date +%s)

if [ "$dry" = 1 ]; then
  # Under build*/ (ignored), at a fixed path: ccache hits across runs.
  work="${FWP_GPU_WORK:-$root/build-gpu-dry}"
  python="${FWP_PYTHON:-$root/.venv/bin/python}"
  stages=(bundle build tests)
  declare -A budget=([bundle]=600 [build]=1500 [tests]=600)
else
  work="${FWP_GPU_WORK:-/tmp/fwp-gpu-check}"
  python="${FWP_PYTHON:-$(command -v python3)}"
  stages=(probe build tests sanitizer train bench)
  if [ "$mode" = quick ]; then
    declare -A budget=([probe]=20 [build]=170 [tests]=45 [sanitizer]=35 [train]=45 [bench]=45)
    train_steps=150; bench_flags=(--quick --repeats 10 --warmup 2)
    sanitize_filter='Models/CudaBundle.KernelsMatchTheReferenceLayerOnTheGpu/delta_net'
  else
    declare -A budget=([probe]=20 [build]=200 [tests]=60 [sanitizer]=75 [train]=75 [bench]=110)
    train_steps=300; bench_flags=(--repeats 10 --warmup 3)
    sanitize_filter='Models/CudaBundle.KernelsMatchTheReferenceLayerOnTheGpu/delta_net:Models/CudaBundle.KernelsMatchTheReferenceLayerOnTheGpu/rdn:Models/CudaBundle.KernelsMatchTheReferenceLayerOnTheGpu/delta_lstm:Models/CudaBundle.KernelsMatchTheReferenceLayerOnTheGpu/delta_mlp_d6_ff10'
  fi
fi
build="$work/build"
unpacked="$work/bundle"
status_file="$work/stages.tsv"

total=0
for s in "${stages[@]}"; do total=$((total + budget[$s])); done
echo "[gpu_check] $([ "$dry" = 1 ] && echo "dry run$([ "$ci" = 1 ] && echo ' (--ci)')" || echo "$mode run") -> $out"
echo "[gpu_check] bundle $bundle; work folder $work; $jobs cores; python $python"
echo "[gpu_check] plan (stage: budget s):$(for s in "${stages[@]}"; do printf ' %s:%s' "$s" "${budget[$s]}"; done); total $total s"

mkdir -p "$work" || exit 2
: > "$status_file"

# summary.json from the stage table (rewritten after every stage, so a
# killed run keeps the stages that finished).
write_summary() {
  "$python" - "$status_file" "$out/summary.json" "$mode" "$dry" "$bundle" "$total" <<'EOF'
import json, sys, platform
path, target, mode, dry, bundle, total = sys.argv[1:]
stages = []
for line in open(path):
    name, status, seconds, budget, note = (line.rstrip("\n").split("\t") + [""] * 5)[:5]
    stages.append({"stage": name, "status": status, "seconds": int(seconds),
                   "budget_s": int(budget), "note": note})
report = {"check": "gpu_check", "mode": "dry-run" if dry == "1" else mode,
          "host": platform.node(), "bundle": bundle, "planned_s": int(total),
          "stages": stages,
          "passed": bool(stages) and all(s["status"] == "pass" for s in stages)}
with open(target + ".tmp", "w") as f:
    json.dump(report, f, indent=2)
import os
os.replace(target + ".tmp", target)
EOF
}

# run_stage NAME LOG FUNCTION: FUNCTION under `timeout` with NAME's budget;
# its output goes to LOG; its last line starting with "NOTE " becomes the
# stage's note.
run_stage() {
  local name="$1" log="$2" fn="$3" start rc status note
  start=$(date +%s)
  echo "[gpu_check] $name (budget ${budget[$name]} s) ..."
  { echo "== $name: $(date -u +%H:%M:%S) budget ${budget[$name]} s"; } >> "$log"
  timeout -k 10 "${budget[$name]}" bash -c "$fn" >> "$log" 2>&1
  rc=$?
  case $rc in
    0) status=pass ;;
    124|137) status=timeout ;;
    *) status=fail ;;
  esac
  note="$(grep '^NOTE ' "$log" | tail -n 1 | cut -c6- | tr '\t' ' ')"
  [ "$status" = pass ] || note="exit $rc${note:+; $note}"
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$(( $(date +%s) - start ))" \
    "${budget[$name]}" "$note" >> "$status_file"
  echo "[gpu_check] $name: $status in $(( $(date +%s) - start )) s${note:+ ($note)}"
  write_summary
}

export root work build unpacked bundle python jobs out ci mode dry
export train_steps="${train_steps:-0}" sanitize_filter="${sanitize_filter:-}"
export bench_flags_str="${bench_flags[*]:-}"

#--- stages -------------------------------------------------------------------

stage_probe() {
  set -x
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
  "$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
"available", torch.cuda.is_available()); assert torch.cuda.is_available(), "torch sees no GPU"
p = torch.cuda.get_device_properties(0); print("device", p.name, "sm_%d%d" % (p.major, p.minor),
p.multi_processor_count, "SMs", p.total_memory >> 20, "MiB")
print("NOTE", p.name, "sm_%d%d" % (p.major, p.minor), "torch", torch.__version__)' || exit 1
  command -v cmake ninja c++ nvcc compute-sanitizer
  cmake --version | head -n 1; ninja --version; c++ --version | head -n 1
  nvcc --version | tail -n 2; compute-sanitizer --version | head -n 2
  nproc; free -g | head -n 2; df -h /tmp | tail -n 1
  command -v cmake ninja c++ >/dev/null
}

stage_bundle() {
  local flags=()
  [ "$ci" = 1 ] && flags=(--no-wheels --no-corpus)
  bash "$root/scripts/gpu_bundle.sh" --out "$bundle" "${flags[@]}" || exit 1
  echo "NOTE $(stat -c %s "$bundle") bytes"
}

stage_build() {
  set -e
  [ -f "$bundle" ] || { echo "no bundle $bundle (scripts/gpu_bundle.sh makes it)"; exit 1; }
  rm -rf "$unpacked"
  mkdir -p "$unpacked"
  tar -xzf "$bundle" -C "$unpacked"
  head -n 7 "$unpacked/MANIFEST.txt"
  local cuda=ON
  # A dry run without the CUDA headers still checks the rest.
  [ "$dry" = 1 ] && [ ! -f /usr/local/cuda/include/cuda.h ] && cuda=OFF
  local start=$(date +%s) opt=()
  # The dry run proves that the bundle builds and its tests pass, not how
  # fast the code runs (the main build compiles the same sources at -O3):
  # -O1 halves the compile time (~15 s instead of ~30 s a LibTorch file).
  [ "$dry" = 1 ] && opt=(-DCMAKE_CXX_FLAGS_RELEASE="-O1 -DNDEBUG")
  if [ ! -f "$build/build.ninja" ]; then
    # Only the bundle and the Python's torch: no MLIR (compiler off), no
    # system GoogleTest (built from the bundle), the bundle's headers first.
    cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "${opt[@]}" \
      -DFWP_ENABLE_COMPILER=OFF -DFWP_ENABLE_RUNTIME=ON -DFWP_ENABLE_CUDA=$cuda \
      -DFWP_PYTHON="$python" -DFWP_DEPS_DIR="$unpacked/deps" \
      -DFWP_PREBUILT_ARTIFACTS="$unpacked/artifacts" \
      -DFWP_ALE_PREFIX="$work/no-ale" -DCMAKE_POSITION_INDEPENDENT_CODE=ON \
      -DCMAKE_DISABLE_FIND_PACKAGE_GTest=ON -DCMAKE_DISABLE_FIND_PACKAGE_MLIR=ON
  else
    cmake "$build" "${opt[@]}" -DFWP_DEPS_DIR="$unpacked/deps" -DFWP_PREBUILT_ARTIFACTS="$unpacked/artifacts"
  fi
  local configured=$(date +%s)
  ninja -C "$build" -j"$jobs" fwp_cuda_tests fwp_compiled_tests fwp-run fwp-train fwp-lm \
    fwp_bench_ops fwp-bench-gpu
  local built=$(date +%s)
  if grep -q '^MLIR_DIR:' "$build/CMakeCache.txt"; then echo "MLIR_DIR is set"; exit 1; fi
  # Where every header came from: none from the system's copies of what
  # the bundle carries.
  local system
  system="$(ninja -C "$build" -t deps | grep -E '^ +/usr/(local/)?include/(toml\+\+|CLI|nlohmann|gtest|gmock)/' | sort -u | head -n 5)"
  if [ -n "$system" ]; then echo "headers from the system instead of the bundle:"; echo "$system"; exit 1; fi
  local bundled=$(ninja -C "$build" -t deps | grep -c "$unpacked/deps/" || true)
  echo "NOTE configure $((configured - start)) s, build $((built - configured)) s on $jobs cores; $bundled bundled-header dependencies, none from the system"
}

stage_tests() {
  local kernels="$unpacked/cuda-kernels" filter xml="$work/tests.xml" rc=0
  rm -f "$xml"
  if [ "$dry" = 1 ]; then
    # The kit's CPU tests: launcher and bundle checks, the FWP_REQUIRE_GPU
    # switch, the artifacts' CUDA images, fwp-run on the bundle's artifacts.
    filter='core\.cuda\.|RequireGpu|CarriesCudaKernels|FwpRunArtifact\.MatchesTheReferenceLayer'
    FWP_CUDA_KERNELS="$kernels" ctest --test-dir "$build" -R "$filter" -j"$jobs" \
      --output-on-failure --output-junit "$xml" --timeout 300 || rc=1
    # The benchmark's operator library on CPU tensors: the compiled delta_net
    # against the eager reference (forward + backward).
    "$python" - "$build" "$unpacked" <<'EOF' || rc=1
import glob, sys, torch
build, unpacked = sys.argv[1:]
lib = glob.glob(f"{build}/**/libfwp_bench_ops.so", recursive=True)
assert lib, "libfwp_bench_ops.so was not built"
torch.ops.load_library(lib[0])
ops = torch.ops.fwp_bench
compiled = ops.load(f"{unpacked}/bench/delta_net_d16.fwpk")
reference = ops.reference("delta_net", 16)
torch.manual_seed(0)
names = ["q", "k", "v", "beta"]
inputs = [torch.randn(2, 3, 7, 16), torch.randn(2, 3, 7, 16), torch.randn(2, 3, 7, 16), torch.randn(2, 3, 7, 1)]
grad = torch.randn(2, 3, 7, 16)
got = ops.forward_backward(compiled, ",".join(names), inputs, grad)
want = ops.forward_backward(reference, ",".join(names), inputs, grad)
diff = max((a - b).abs().max().item() for a, b in zip(got, want))
print(f"fwp_bench ops on CPU: compiled vs reference, y and 4 gradients, max |diff| {diff:.2e}")
assert len(got) == 5 and diff < 1e-4, diff
assert torch.equal(ops.forward(compiled, ",".join(names), inputs), got[0])
# The benchmark feeds fla phi(q), phi(k), sigmoid(beta), scale 1: the same
# function as MODELS.md's delta_net? fla's own pure-PyTorch recurrence
# (fla/ops/delta_rule/naive.py in the bundled wheel; it always scales q by
# d^-0.5, so q * sqrt(d) here) against fwp's eager reference.
import math, types, zipfile
import torch.nn.functional as F
wheels = glob.glob(f"{unpacked}/wheels/fla_core-*.whl")
if wheels:
    sys.modules.setdefault("einops", types.SimpleNamespace(rearrange=None))  # only its chunked form uses it
    naive = types.ModuleType("fla_naive")
    exec(zipfile.ZipFile(wheels[0]).read("fla/ops/delta_rule/naive.py"), naive.__dict__)
    phi = lambda x: (F.elu(x) + 1) / (F.elu(x) + 1).sum(-1, keepdim=True)
    q, k, v = (t.double() for t in inputs[:3])
    o, _ = naive.delta_rule_recurrence(phi(q) * math.sqrt(16), phi(k), v, torch.sigmoid(inputs[3][..., 0].double()))
    y = ops.forward(reference, ",".join(names), inputs)
    diff = (o - y.double()).abs().max().item()
    print(f"fla's naive delta rule (as gpu_bench.py feeds fla) vs fwp's reference delta_net: max |diff| {diff:.2e}")
    assert diff < 1e-5, diff
else:
    print("no fla wheel in the bundle (--ci): the fla convention check is skipped")
EOF
  else
    FWP_REQUIRE_GPU=1 FWP_CUDA_KERNELS="$kernels" ctest --test-dir "$build" \
      -R 'cuda|Cuda|RequireGpu' -j 8 --output-on-failure --output-junit "$xml" --timeout 240 || rc=1
  fi
  # Counts from the JUnit file; on a GPU, every kind of GPU test must have run.
  "$python" - "$xml" "$dry" <<'EOF' || rc=1
import sys, xml.etree.ElementTree as ET
path, dry = sys.argv[1:]
cases = ET.parse(path).getroot().iter("testcase")
counts = {"pass": 0, "fail": 0, "skip": 0}
gpu = {"core.cuda.Models/CudaBundle.KernelsMatchTheReferenceLayerOnTheGpu": 0,
       "compiled.AllModels/CompiledCudaMatchesReference": 0,
       "compiled.FwpRunArtifact.CudaMatchesTheReferenceLayer": 0}
for case in cases:
    name = case.get("name", "")
    status = case.get("status", "")
    kind = "skip" if status == "notrun" or case.find("skipped") is not None else \
           "fail" if case.find("failure") is not None or case.find("error") is not None else "pass"
    counts[kind] += 1
    if kind == "pass":
        for prefix in gpu:
            if name.startswith(prefix):
                gpu[prefix] += 1
line = f"{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped"
if dry != "1":
    line += "; GPU tests passed: " + ", ".join(f"{k.split('.', 1)[1]} {v}" for k, v in gpu.items())
print("NOTE", line)
if counts["fail"] or counts["pass"] == 0:
    sys.exit(1)
if dry != "1" and min(gpu.values()) == 0:
    print("a kind of GPU test did not run: the run tested nothing there")
    sys.exit(1)
EOF
  exit $rc
}

stage_sanitizer() {
  local tests="$build/runtime/core/cuda/fwp_cuda_tests" rc=0 tool share=$(( ${budget_sanitizer} / 3 ))
  for tool in memcheck racecheck synccheck; do
    echo "== compute-sanitizer --tool $tool (at most $share s)"
    FWP_REQUIRE_GPU=1 FWP_CUDA_KERNELS="$unpacked/cuda-kernels" timeout -k 5 "$share" \
      compute-sanitizer --tool "$tool" --error-exitcode 9 --print-limit 20 \
      "$tests" --gtest_filter="$sanitize_filter"
    local r=$?
    echo "== $tool: exit $r"
    [ $r -eq 0 ] || { rc=1; failed="${failed:-}$tool "; }
  done
  echo "NOTE ${failed:-no} errors ($sanitize_filter)"
  exit $rc
}

stage_train() {
  local runs="$work/runs" artifact="$unpacked/models/delta_net.fwpk" rc=0
  rm -rf "$runs"; mkdir -p "$runs"
  local common=(--config "$root/models/configs/codeexec_small.toml" --artifact "$artifact"
                --set train.log_every=1 --set train.eval_every=100000 --set train.threads=8
                --set "data.dir=\"$work/data/codeexec3_s10\"")
  echo "== fwp-train, CPU, 5 steps"
  "$build/runtime/train/fwp-train" "${common[@]}" --device cpu --steps 5 --run-dir "$runs/train-cpu" || rc=1
  echo "== fwp-train, CUDA, $train_steps steps"
  "$build/runtime/train/fwp-train" "${common[@]}" --device cuda --steps "$train_steps" --run-dir "$runs/train-cuda" || rc=1
  local lm=(train --config "$root/models/configs/wt103_demo_austen.toml" --no-progress-bar
            --set "data.dir=\"$unpacked/data/austen\"" --set "model.artifact=\"$artifact\""
            --set model.dropout=0.0 --set train.log_every=1 --set train.eval_every=100000
            --set train.checkpoint_every=100000 --set 'eval.modes=["segments"]')
  echo "== fwp-lm, CPU, 5 steps"
  "$build/runtime/lm/fwp-lm" "${lm[@]}" --device cpu --set train.steps=5 \
    --set "train.run_dir=\"$runs/lm-cpu\"" || rc=1
  echo "== fwp-lm, CUDA, $train_steps steps"
  "$build/runtime/lm/fwp-lm" "${lm[@]}" --device cuda --set "train.steps=$train_steps" \
    --set "train.run_dir=\"$runs/lm-cuda\"" || rc=1
  "$python" - "$runs" <<'EOF' || rc=1
import json, sys
runs = sys.argv[1]
def losses(run):
    out = []
    for line in open(f"{runs}/{run}/metrics.jsonl"):
        record = json.loads(line)
        if record.get("split") == "train" and "loss" in record:
            out.append(record["loss"])
    return out
notes, ok = [], True
for tool in ("train", "lm"):
    try:
        cpu, gpu = losses(f"{tool}-cpu"), losses(f"{tool}-cuda")
    except OSError as error:
        print(f"{tool}: {error}"); ok = False; notes.append(f"{tool}: no metrics"); continue
    n = min(5, len(cpu), len(gpu))
    diffs = [abs(a - b) for a, b in zip(cpu[:n], gpu[:n])]
    match = n == 5 and all(d <= 2e-3 * max(1.0, abs(c)) for d, c in zip(diffs, cpu))
    w = max(1, min(20, len(gpu) // 4))
    first, last = sum(gpu[:w]) / w, sum(gpu[-w:]) / w
    falls = len(gpu) >= 20 and last < 0.95 * first
    print(f"{tool}: CPU {['%.5f' % x for x in cpu[:n]]}")
    print(f"{tool}: GPU {['%.5f' % x for x in gpu[:n]]}  max |diff| {max(diffs, default=float('nan')):.2e}")
    print(f"{tool}: GPU loss over {len(gpu)} steps: first {w} mean {first:.4f}, last {w} mean {last:.4f}")
    ok = ok and match and falls
    notes.append(f"{tool}: first 5 match={match} (max diff {max(diffs, default=float('nan')):.1e}), "
                 f"loss {first:.3f}->{last:.3f} falls={falls}")
print("NOTE " + "; ".join(notes))
sys.exit(0 if ok else 1)
EOF
  exit $rc
}

stage_bench() {
  local site="$work/site"
  rm -rf "$site"
  if ls "$unpacked"/wheels/*.whl >/dev/null 2>&1; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --target "$site" "$unpacked"/wheels/*.whl || echo "installing the fla wheels failed"
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  local lib
  lib="$(find "$build" -name libfwp_bench_ops.so | head -n 1)"
  # Leave 15 s of the budget to write the JSON.
  PYTHONUNBUFFERED=1 "$python" "$root/bench/gpu_bench.py" --ops "${lib:-missing}" \
    --artifacts "$unpacked/bench" --out "$out/bench.json" \
    --budget-s $(( budget_bench - 15 )) $bench_flags_str
  local rc=$?
  "$python" -c 'import json,sys; r=json.load(open(sys.argv[1])); print("NOTE %d cases, %d failed parts, %d skipped" % (len(r["cases"]), r["failed"], r["skipped"]))' "$out/bench.json" || true
  exit $rc
}
export -f stage_probe stage_bundle stage_build stage_tests stage_sanitizer stage_train stage_bench
for s in "${stages[@]}"; do export "budget_$s=${budget[$s]}"; done

#--- run ----------------------------------------------------------------------

if [ "$dry" = 1 ]; then
  rm -f "$out"/{bundle,build,tests}.log
  run_stage bundle "$out/bundle.log" stage_bundle
  run_stage build "$out/build.log" stage_build
  run_stage tests "$out/tests.log" stage_tests
else
  rm -f "$out"/{probe,build,tests,sanitizer,train,bench}.log "$out/bench.json"
  run_stage probe "$out/probe.log" stage_probe
  run_stage build "$out/build.log" stage_build
  run_stage tests "$out/tests.log" stage_tests
  run_stage sanitizer "$out/sanitizer.log" stage_sanitizer
  run_stage train "$out/train.log" stage_train
  run_stage bench "$out/bench.log" stage_bench
fi

echo "[gpu_check] done in $(( $(date +%s) - t0 )) s (planned $total s):"
failed=0
while IFS=$'\t' read -r name status seconds b note; do
  printf '  %-10s %-8s %4s s / %4s s  %s\n' "$name" "$status" "$seconds" "$b" "$note"
  [ "$status" = pass ] || failed=1
done < "$status_file"
echo "[gpu_check] files: $(cd "$out" && ls | tr '\n' ' ')"
exit $failed
