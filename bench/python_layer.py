#!/usr/bin/env python3
"""The Python-called layer (fwp.Layer -> torch.ops.fwp) against the C++ call
(fwp::CompiledLayer, as fwp-train calls it), forward + backward on CPU, in one process.

    OMP_NUM_THREADS=1 .venv/bin/python bench/python_layer.py [--out bench/python_layer_cpu_1thread.json]

Both run on the same inputs, interleaved in rounds; reports the median of each and their
ratio (target: the Python call within 5 % of the C++ call). Not a test: no thresholds.
The C++ baseline is the operator fwp_bench::cpp_layer_ms (bench/python_layer_cpp.cpp,
build/lib/libfwp_torch_bench.so).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

import fwp
from fwp._paths import build_dir
from machine import cpu_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="delta_net,rdn,delta_lstm")
    parser.add_argument("--shape", default="8,8,256", help="B,H,T (d from the artifact: 16)")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=1, help="calls per round and side")
    parser.add_argument("--out", default=None)
    parser.add_argument("--note", default="", help="conditions of the run, kept in the JSON")
    args = parser.parse_args()
    torch.ops.load_library(str(build_dir() / "lib" / "libfwp_torch_bench.so"))
    batch, heads, steps = (int(x) for x in args.shape.split(","))
    results = []
    for model in args.models.split(","):
        torch.manual_seed(0)
        layer = fwp.load(build_dir() / "artifacts" / f"{model}.fwpk", heads=heads)
        sig = layer.signature
        seq = {s.name: torch.randn(batch, heads, steps, *s.shape).requires_grad_(True)
               for s in sig.seq}
        with torch.no_grad():
            for p in layer.parameters():
                p.copy_(0.1 * torch.randn(p.shape))
        grad_y = torch.randn(batch, heads, steps, *sig.output.shape)
        cpp_inputs = [*(t.detach() for t in seq.values()), *(p.detach() for p in layer.parameters())]

        def python_ms() -> float:
            start = time.perf_counter()
            y, _ = layer(**seq)
            y.backward(grad_y)
            elapsed = (time.perf_counter() - start) * 1e3
            layer.zero_grad(set_to_none=True)
            for t in seq.values():
                t.grad = None
            return elapsed

        python_ms(), torch.ops.fwp_bench.cpp_layer_ms(str(layer.path), cpp_inputs, grad_y, 1)
        py, cpp = [], []
        for _ in range(args.rounds):
            py += [python_ms() for _ in range(args.repeats)]
            cpp += torch.ops.fwp_bench.cpp_layer_ms(str(layer.path), cpp_inputs, grad_y,
                                                    args.repeats)
        entry = {
            "model": model, "B": batch, "H": heads, "T": steps, "d": sig.dims.get("d"),
            "threads": torch.get_num_threads(),
            "python_ms": round(statistics.median(py), 4),
            "cpp_ms": round(statistics.median(cpp), 4),
            "ratio": round(statistics.median(py) / statistics.median(cpp), 4),
            "python_min_ms": round(min(py), 4), "cpp_min_ms": round(min(cpp), 4),
            "calls": len(py),
        }
        print(json.dumps(entry), flush=True)
        results.append(entry)
    report = {
        "benchmark": "bench/python_layer.py: fwp.Layer (torch.ops.fwp) vs fwp::CompiledLayer, "
                     "forward + backward, CPU, one process",
        "machine": {"host": platform.node(), "cpu": cpu_name(), "cores": os.cpu_count(),
                    "torch": torch.__version__, "python": platform.python_version()},
        "note": args.note,
        "results": results,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
