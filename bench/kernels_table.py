"""The markdown tables of docs/benchmarks.md ("CPU kernels vs the core's peak") from a
fwp-bench-kernels JSON output.

    python3 bench/kernels_table.py build/bench-kernels.json [--side current|baseline]

`--side baseline` tabulates the baseline ("today's") kernels of the file, `current` (the
default) the kernels under test, with their speed-up over the baseline when the file has one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def shape(row: dict[str, Any]) -> str:
    return f"({row['B']},{row['H']},{row['T']},{row['d']})"


def number(value: float | None, digits: int, suffix: str = "") -> str:
    return "—" if value is None else f"{value:.{digits}f}{suffix}"


def table(result: dict[str, Any], side: str) -> str:
    peak = result["peak"]
    fma = peak["fma"]
    machine = result["machine"]
    cpu = machine["cpu"]
    cpu_id = machine.get("cpu_id") or {}
    if "family" in cpu_id and "model" in cpu_id:
        cpu += f" (family {cpu_id['family']}, model {cpu_id['model']})"
    caches = machine.get("caches") or {}
    if caches:
        cpu += ", caches " + " ".join(f"{level} {size}" for level, size in caches.items())
    images = sorted({row["cpu_image"] for row in result["rows"] if row.get("cpu_image")})
    if images:
        cpu += ", kernels " + " ".join(images)
    lines = [
        f"Machine: {cpu}, {result['machine']['threads']} thread, "
        f"torch {result['machine']['torch']}, load average at start "
        f"{result['machine']['load_average_at_start']}, {result['machine']['date_utc']}. "
        f"Peak: FMA micro-benchmark ({fma['isa']}) "
        f"{number(peak.get('fma_gflops', fma['gflops']), 1)} GFLOP/s, "
        f"SGEMM 1024³ {peak['sgemm_1024_gflops']:.1f} GFLOP/s → "
        f"peak {peak['peak_gflops']:.1f} GFLOP/s.",
        "",
    ]
    with_today = side == "current" and any(
        row.get("speedup_vs_today") is not None for row in result["rows"]
    )
    header = "| model | (B,H,T,d) | fwd+bwd ms | GFLOP/s | % of peak |"
    rule = "|---|---|---:|---:|---:|"
    if with_today:
        header += " vs today |"
        rule += "---:|"
    header += " vs eager | vs chunkwise LibTorch |"
    rule += "---:|---:|"
    lines += [header, rule]
    for row in result["rows"]:
        ms = row.get(f"{side}_ms")
        if ms is None:
            continue
        eager = row.get("eager_ms")
        chunkwise = row.get("chunkwise_ms")
        cells = [
            row["model"],
            shape(row),
            number(ms, 1),
            number(row[f"{side}_gflops"], 1),
            number(row[f"{side}_pct_peak"], 1, " %"),
        ]
        if with_today:
            cells.append(number(row.get("speedup_vs_today"), 2, "×"))
        cells.append(number(None if eager is None else eager / ms, 1, "×"))
        cells.append(number(None if chunkwise is None else chunkwise / ms, 2, "×"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, help="fwp-bench-kernels --out file")
    parser.add_argument("--side", choices=["current", "baseline"], default="current")
    args = parser.parse_args()
    try:
        result = json.loads(args.json.read_text())
        print(table(result, args.side))
    except (OSError, ValueError, KeyError) as error:
        print(f"error: {args.json}: not a fwp-bench-kernels output ({error!r})", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
