#!/usr/bin/env python3
"""One command for the GPU benchmark (docs/gpu.md).

    python3 bench/gpu_bench.py [--build DIR] [--kernels DIR] [--out FILE] [-- fwp-bench-gpu flags]

1. Kernel bundles: --kernels DIR if given (made on a machine with MLIR, e.g.
   by `ninja -C build fwp_cuda_kernels`), else the build's own cuda-kernels/
   (built when the compiler is part of the build).
2. Configures and builds fwp-bench-gpu in --build (default build-gpu) with the
   runtime's CUDA support, then runs it and writes the JSON to --out
   (default <build>/bench-gpu.json).
Exits non-zero with a message when a step fails. Needs cmake, ninja, a C++
compiler, LibTorch with CUDA (FWP_PYTHON or .venv) and a GPU.
"""
import argparse
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(command):
    print("+", " ".join(command), flush=True)
    result = subprocess.run(command, cwd=ROOT)
    if result.returncode != 0:
        sys.exit(f"error: {' '.join(command)} failed with exit code {result.returncode}")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default=os.path.join(ROOT, "build-gpu"))
    parser.add_argument("--kernels", help="folder of kernel bundles bench_<model>_d<d>")
    parser.add_argument("--out", help="JSON results (default <build>/bench-gpu.json)")
    parser.add_argument("--jobs", default=str(os.cpu_count() or 2))
    parser.add_argument("extra", nargs="*", help="flags for fwp-bench-gpu")
    args = parser.parse_args()

    for tool in ("cmake", "ninja"):
        if not shutil.which(tool):
            sys.exit(f"error: {tool} is not installed")
    build = os.path.abspath(args.build)
    if not os.path.exists(os.path.join(build, "build.ninja")):
        run(["cmake", "-S", ROOT, "-B", build, "-G", "Ninja", "-DFWP_ENABLE_CUDA=ON",
             "-DFWP_ENABLE_TESTS=OFF"])
    targets = ["fwp-bench-gpu"]
    kernels = args.kernels
    if not kernels:
        kernels = os.path.join(build, "cuda-kernels")
        # Present only when the compiler is part of this build.
        if "fwp_cuda_kernels" in subprocess.run(
                ["ninja", "-C", build, "-t", "targets", "all"], cwd=ROOT,
                capture_output=True, text=True).stdout:
            targets.append("fwp_cuda_kernels")
    run(["ninja", "-C", build, "-j", args.jobs] + targets)
    if not os.path.isdir(kernels):
        sys.exit(f"error: no kernel bundles in {kernels}: build them where MLIR is "
                 "installed (ninja -C build fwp_cuda_kernels) and pass --kernels")
    out = os.path.abspath(args.out or os.path.join(build, "bench-gpu.json"))
    run([os.path.join(build, "runtime", "core", "cuda", "fwp-bench-gpu"),
         "--kernels", os.path.abspath(kernels), "--out", out] + args.extra)
    print(f"results: {out}")


if __name__ == "__main__":
    main()
