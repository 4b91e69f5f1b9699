#!/usr/bin/env python3
"""Time and peak memory of one fwp.Layer training call (forward + backward) on CPU.

One artifact per process, so that the peak resident memory (ru_maxrss) is the call's own:

    OMP_NUM_THREADS=1 .venv/bin/python bench/python_training_call.py ART.fwpk --shape 2,8,1024

Prints one JSON line: the minimum and median of ``--repeats`` calls (ms) and the rise of the
peak resident memory over the memory before the first call (MiB). Not a test: no thresholds.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import torch

import fwp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact")
    parser.add_argument("--shape", default="2,8,1024", help="B,H,T")
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    batch, heads, steps = (int(x) for x in args.shape.split(","))
    torch.manual_seed(0)
    layer = fwp.load(args.artifact, heads=heads)
    seq = {s.name: torch.randn(batch, heads, steps, *s.shape).requires_grad_(True)
           for s in layer.signature.seq}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        y, _ = layer(**seq)
        y.backward(torch.ones_like(y))
        times.append((time.perf_counter() - start) * 1e3)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"artifact": args.artifact, "layer": layer.signature.layer,
                      "B": batch, "H": heads, "T": steps,
                      "checkpoint_every": layer.signature.checkpoint_every,
                      "threads": torch.get_num_threads(), "min_ms": round(min(times), 2),
                      "median_ms": round(statistics.median(times), 2),
                      "peak_rss_rise_mib": round((peak - before) / 1024, 1)}))


if __name__ == "__main__":
    main()
