#!/usr/bin/env python3
"""Mutation fuzzing of the compiler: fwp-opt and fwp-compile must never crash.

Each case mutates one of models/*.mlir (a flipped byte, a deleted, duplicated
or swapped line, a changed number, a swapped token, a truncation) and runs
`fwp-opt` (parse, verify, print) and `fwp-compile --emit=manifest` (the front
end: differentiation, fusion, manifest) on it. A tool may reject the input
(exit 1 with a diagnostic) but must never die of a signal, print an LLVM
ERROR or a crash report, or run past the timeout. Prints the counts; exit
code 1 when any case crashed (the inputs are kept in --keep).

    scripts/fuzz_compiler.py --count 300 --seed 1 [--tools-dir build/bin]
"""
import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CRASH_MARKERS = ("LLVM ERROR", "PLEASE submit a bug report", "Stack dump", "Assertion",
                 "UNREACHABLE")


def mutate(text: str, rng: random.Random) -> str:
    kind = rng.randrange(7)
    lines = text.split("\n")
    if kind == 0 and text:  # flip a byte
        at = rng.randrange(len(text))
        return text[:at] + chr(ord(text[at]) ^ (1 << rng.randrange(7))) + text[at + 1:]
    if kind == 1 and len(lines) > 1:  # delete a line
        del lines[rng.randrange(len(lines))]
    elif kind == 2:  # duplicate a line
        at = rng.randrange(len(lines))
        lines.insert(at, lines[at])
    elif kind == 3 and len(lines) > 1:  # swap two lines
        a, b = rng.randrange(len(lines)), rng.randrange(len(lines))
        lines[a], lines[b] = lines[b], lines[a]
    elif kind == 4:  # change a number
        numbers = list(re.finditer(r"\d+", text))
        if numbers:
            m = rng.choice(numbers)
            value = rng.choice(["0", "1", "3", "4097", "65536", "2147483648", "-1",
                                str(int(m.group()) * 2), "99999999999999999999"])
            return text[:m.start()] + value + text[m.end():]
    elif kind == 5:  # swap two tokens
        tokens = list(re.finditer(r"[%@!]?[A-Za-z_][\w.]*", text))
        if len(tokens) > 1:
            a, b = rng.sample(tokens, 2)
            if a.start() > b.start():
                a, b = b, a
            return (text[:a.start()] + b.group() + text[a.end():b.start()] + a.group() +
                    text[b.end():])
    else:  # truncate
        return text[:rng.randrange(len(text) + 1)]
    return "\n".join(lines)


def run(command, timeout):
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                errors="replace")
    except subprocess.TimeoutExpired:
        return "timeout"
    if result.returncode < 0:
        return f"signal {-result.returncode}"
    if any(marker in result.stderr for marker in CRASH_MARKERS):
        return "crash report: " + result.stderr.strip().splitlines()[0][:200]
    if result.returncode not in (0, 1):
        return f"exit {result.returncode}"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=300, help="mutated inputs (default 300)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tools-dir", default="", help="folder of fwp-opt and fwp-compile "
                        "(default: PATH)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per tool run")
    parser.add_argument("--keep", default="", help="copy crashing inputs here")
    args = parser.parse_args()

    def tool(name: str) -> str:
        path = os.path.join(args.tools_dir, name) if args.tools_dir else shutil.which(name)
        if not path or not os.path.exists(path):
            sys.exit(f"fuzz_compiler: {name} not found (--tools-dir)")
        return path

    fwp_opt, fwp_compile = tool("fwp-opt"), tool("fwp-compile")
    models = sorted((ROOT / "models").glob("*.mlir"))
    rng = random.Random(args.seed)
    crashes = []
    rejected = accepted = 0
    with tempfile.TemporaryDirectory(prefix="fwp-fuzz-") as tmp:
        for i in range(args.count):
            model = models[i % len(models)]
            text = model.read_text()
            for _ in range(1 + rng.randrange(3)):
                text = mutate(text, rng)
            path = Path(tmp) / f"case{i}.mlir"
            path.write_text(text, errors="replace")
            for command in ([fwp_opt, str(path)],
                            [fwp_compile, str(path), "--emit=manifest", "-o", os.devnull]):
                failure = run(command, args.timeout)
                if failure:
                    crashes.append((i, model.name, os.path.basename(command[0]), failure))
                    if args.keep:
                        os.makedirs(args.keep, exist_ok=True)
                        shutil.copy(path, Path(args.keep) / path.name)
            status = subprocess.run([fwp_opt, str(path)], capture_output=True).returncode
            accepted += status == 0
            rejected += status != 0
    print(f"fuzz_compiler: {args.count} mutated inputs (seed {args.seed}), "
          f"{2 * args.count} tool runs: {accepted} parsed and verified, {rejected} rejected "
          f"with a diagnostic, {len(crashes)} crashes")
    for case, model, name, failure in crashes:
        print(f"  case {case} ({model}) {name}: {failure}")
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
