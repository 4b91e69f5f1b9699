#!/usr/bin/env python3
"""CPU time and peak memory of each backward strategy (issue 12).

Compiles delta_net and gated_delta_net under every backward strategy that
applies (``fwp-compile --backward=...``, CPU code only), then for each
(model, shape):

* one process per strategy measures its peak resident memory (ru_maxrss) and
  the rise over the memory before the first forward;
* one process times all strategies interleaved (median of ``--repeats``), so
  the ratios between strategies come from the same process.

Writes JSON (``--out``) and prints a Markdown table for docs/benchmarks.md.
Not a test: no thresholds. Run on a quiet machine, one thread:

    OMP_NUM_THREADS=1 python3 bench/backward_strategies.py --build build \\
        --out bench/backward_strategies_1thread.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from machine import cpu_name

ROOT = Path(__file__).resolve().parent.parent
SHAPES = [(8, 8, 256, 16), (4, 8, 1024, 32)]
MODELS = ["delta_net", "gated_delta_net"]
STRATEGIES = ["invert", "store", "checkpoint:16", "checkpoint:64"]


def compile_artifact(build: Path, model: str, d: int, strategy: str,
                     out_dir: Path) -> tuple[Path | None, str]:
    out = out_dir / f"{model}_d{d}_{strategy.replace(':', '')}.fwpk"
    cmd = [str(build / "bin" / "fwp-compile"), str(ROOT / "models" / f"{model}.mlir"),
           "--dim", f"d={d}", f"--backward={strategy}", "--cuda=off", "-o", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        errors = [line.split("error: ", 1)[1] for line in done.stderr.splitlines()
                  if "error: " in line]
        return None, errors[0] if errors else "refused"
    return out, ""


def bench(build: Path, artifacts: list[Path], shape: tuple[int, int, int, int],
          repeats: int) -> list[dict]:
    b, h, t, _ = shape
    cmd = [str(build / "bench" / "fwp-bench-strategies"), "--shape", f"{b},{h},{t}",
           "--repeats", str(repeats)]
    for artifact in artifacts:
        cmd += ["--artifact", str(artifact)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", type=Path, default=ROOT / "build")
    parser.add_argument("--out", type=Path, help="JSON results")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=MODELS)
    args = parser.parse_args()

    out_dir = args.build / "bench" / "strategies"
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for model in args.models:
        for shape in SHAPES:
            d = shape[3]
            compiled: list[tuple[str, Path]] = []
            for strategy in STRATEGIES:
                artifact, why = compile_artifact(args.build, model, d, strategy, out_dir)
                if artifact is None:
                    rows.append({"layer": model, "strategy": strategy, "B": shape[0],
                                 "H": shape[1], "T": shape[2], "d": d, "refused": why})
                    print(f"{model} d={d} {strategy}: refused ({why})", file=sys.stderr)
                    continue
                compiled.append((strategy, artifact))
            timed = bench(args.build, [a for _, a in compiled], shape, args.repeats)
            for (strategy, artifact), row in zip(compiled, timed):
                memory = bench(args.build, [artifact], shape, 1)[0]
                row["peak_rss_mib"] = memory["peak_rss_mib"]
                row["rss_rise_mib"] = memory["rss_rise_mib"]
                row["strategy_asked"] = strategy
                rows.append(row)
                print(f"{model} {shape} {strategy}: {row['fwd_bwd_ms']:.1f} ms, "
                      f"+{row['rss_rise_mib']:.0f} MiB", file=sys.stderr)
    result = {"machine": cpu_name(), "threads": os.environ.get("OMP_NUM_THREADS", "default"),
              "repeats": args.repeats, "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")

    print(f"Machine: {result['machine']}, OMP_NUM_THREADS={result['threads']}, "
          f"median of {args.repeats}\n")
    print("| model | (B,H,T,d) | strategy | fwd+bwd ms | vs first | peak RSS MiB | rise MiB |")
    print("|---|---|---|---:|---:|---:|---:|")
    for row in rows:
        shape = f"({row['B']},{row['H']},{row['T']},{row['d']})"
        if "refused" in row:
            print(f"| {row['layer']} | {shape} | {row['strategy']} | refused: "
                  f"{row['refused']} | | | |")
            continue
        print(f"| {row['layer']} | {shape} | {row['strategy']} | {row['fwd_bwd_ms']:.1f} | "
              f"{row['ratio_to_first']:.2f} | {row['peak_rss_mib']:.0f} | "
              f"{row['rss_rise_mib']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
