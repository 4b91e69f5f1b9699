#!/usr/bin/env python3
"""Data-parallel scaling of fwp-lm train on CPU processes (docs/training.md).

Trains the same small word-level Delta Net LM (eager reference layer) on a
synthetic corpus three ways and reports tokens per second of the whole job:

  1 process x 1 thread, batch b        (the baseline)
  2 processes x 1 thread, batch b each (data parallel, Gloo on 127.0.0.1)
  1 process x 2 threads, batch 2b      (the same cores, intra-op threads)

Usage: bench/data_parallel.py [--build build] [--out bench/data_parallel_cpu.json]
"""

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import cpu_name


def write_corpus(folder: Path) -> None:
    rng = random.Random(5)
    for split, lines in (("train", 4000), ("valid", 50), ("test", 50)):
        words: list[str] = []
        word = 0
        text = []
        for _ in range(lines):
            for _ in range(12):
                word = rng.randrange(500) if rng.random() < 0.3 else (word + 1) % 500
                words.append(f"w{word}")
            text.append(" " + " ".join(words) + "\n")
            words.clear()
        (folder / f"wiki.{split}.tokens").write_text("".join(text))


CONFIG = """name = "bench_dp"
[data]
task = "wikitext"
dir = "{data}"
[model]
kind = "fwp"
layer = "delta_net"
reference = true
layers = 2
hidden = 64
heads = 4
ff_mult = 4
dropout = 0.0
[lm]
cutoffs = []
[train]
steps = {steps}
batch = {batch}
context = 64
warmup = 0
schedule = "constant"
lr = 1e-3
log_every = {steps}
eval_every = 0
checkpoint_every = 0
"""


def run(tool: Path, folder: Path, name: str, batch: int, steps: int, nproc: int,
        threads: int) -> dict[str, Any]:
    config = folder / f"{name}.toml"
    config.write_text(CONFIG.format(data=folder, steps=steps, batch=batch))
    run_dir = folder / name
    command = [str(tool), "--threads", str(threads), "train", "--config", str(config),
               "--no-progress-bar", "--set", f"train.run_dir={run_dir}"]
    if nproc > 1:
        command += ["--nproc", str(nproc)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    start = time.monotonic()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    wall = time.monotonic() - start
    record = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
              if json.loads(line).get("split") == "train"][-1]
    steps_per_s = record["steps_per_s"]
    tokens_per_step = batch * nproc * 64
    return {"processes": nproc, "threads_per_process": threads, "batch_per_process": batch,
            "tokens_per_step": tokens_per_step, "steps": steps,
            "steps_per_second": steps_per_s, "tokens_per_second": steps_per_s * tokens_per_step,
            "wall_seconds_incl_startup": wall, "final_train_loss": record["loss"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", default="build")
    parser.add_argument("--out", default="bench/data_parallel_cpu.json")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    tool = Path(args.build) / "runtime/lm/fwp-lm"
    if not tool.exists():
        print(f"error: {tool} does not exist (build fwp-lm first)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_corpus(folder)
        results = [
            run(tool, folder, "p1", args.batch, args.steps, 1, 1),
            run(tool, folder, "p2", args.batch, args.steps, 2, 1),
            run(tool, folder, "t2", 2 * args.batch, args.steps, 1, 2),
        ]
    base = results[0]["tokens_per_second"]
    for result in results:
        result["speedup_vs_1_process_1_thread"] = result["tokens_per_second"] / base
    out = {
        "benchmark": "data-parallel fwp-lm train, CPU, Gloo on 127.0.0.1",
        "model": "delta_net (eager reference), 2 layers, hidden 64, 4 heads, context 64",
        "machine": {"host": platform.node(), "cpu": cpu_name(), "cores": os.cpu_count(),
                    "load_average_1min_before": os.getloadavg()[0]},
        "note": "steps_per_second is the training loop's own rate (rank 0), excluding start-up",
        "results": results,
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
