#!/usr/bin/env python3
"""Markdown tables of the runs scripts/results_algorithmic.sh wrote.

    python3 scripts/results_table.py [runs/results]

Per run folder <task>_<model>: the test score of the best-on-validation
checkpoint (the last "test" line of log.txt), the validation accuracy at each
evaluation (metrics.jsonl) and the training speed. Exits 1 when a folder has
no test result yet.
"""
import json
import os
import re
import sys

NAMES = {"lstm": "LSTM", "transformer": "Transformer", "linear_transformer": "Linear Transformer",
         "delta_net": "Delta Net", "delta_mlp": "Delta MLP", "delta_rnn": "Delta RNN",
         "delta_lstm": "Delta LSTM", "rdn": "RDN"}


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "runs/results"
    missing = 0
    for task in ("listops10", "codeexec3"):
        rows = []
        for model in NAMES:
            folder = os.path.join(root, f"{task}_{model}")
            if not os.path.isdir(folder):
                continue
            log = open(os.path.join(folder, "log.txt")).read()
            tests = re.findall(r"^test \(best.pt, step (\d+)\):(.*)$", log, re.M)
            if not tests:
                print(f"{folder}: no test result yet", file=sys.stderr)
                missing += 1
                continue
            step, scores = tests[-1]
            metrics = dict(re.findall(r"(\w+) ([0-9.]+)", scores))
            valid, speed = [], []
            for line in open(os.path.join(folder, "metrics.jsonl")):
                record = json.loads(line)
                if record.get("split") == "valid":
                    # code execution: print accuracy (sequence accuracy stays 0 early on)
                    valid.append(f"{100 * record.get('print_acc', record['acc']):.1f}")
                elif record.get("split") == "train" and "steps_per_s" in record:
                    speed.append(record["steps_per_s"])
            test = f"{100 * float(metrics['acc']):.1f}"
            if "print_acc" in metrics:
                test = f"seq {test}, print {100 * float(metrics['print_acc']):.1f}"
            rows.append(f"| {NAMES[model]} | {test} | {step} | {' / '.join(valid)} | "
                        f"{sum(speed) / max(len(speed), 1):.2f} |")
        if rows:
            print(f"\n{task}: test accuracy % (best-on-validation checkpoint)\n")
            column = "validation print acc" if task.startswith("codeexec") else "validation acc"
            print(f"| model | test | best step | {column} at each evaluation | steps/s |")
            print("| --- | --- | --- | --- | --- |")
            print("\n".join(rows))
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
