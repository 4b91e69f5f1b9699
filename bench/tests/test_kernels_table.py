"""bench/kernels_table.py: the markdown tables of docs/benchmarks.md from a
fwp-bench-kernels JSON output. The expected cells are computed here from the
file's numbers, not taken from the script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent
SCRIPT = BENCH / "kernels_table.py"


def run(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), str(path), *args],
                          capture_output=True, text=True, check=False)


def result(machine_extra: dict, row_extra: dict) -> dict:
    row = {"model": "delta_net", "B": 4, "H": 8, "T": 512, "d": 32,
           "current_ms": 8.0, "current_gflops": 50.0, "current_pct_peak": 42.5,
           "baseline_ms": 40.0, "baseline_gflops": 10.0, "baseline_pct_peak": 8.5,
           "speedup_vs_today": 5.0, "eager_ms": 480.0, "chunkwise_ms": 70.0}
    row.update(row_extra)
    machine = {"cpu": "AMD EPYC", "threads": 1, "torch": "2.11.0",
               "load_average_at_start": "0.5 0.5 0.5", "date_utc": "2026-11-30T20:00:00Z"}
    machine.update(machine_extra)
    return {"machine": machine, "rows": [row],
            "peak": {"fma": {"isa": "avx512f", "gflops": 117.0}, "fma_gflops": 117.5,
                     "sgemm_1024_gflops": 100.5, "peak_gflops": 117.5}}


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "kernels.json"
    path.write_text(json.dumps(data))
    return path


def test_names_the_cpu_generation_caches_and_kernel_image(tmp_path: Path) -> None:
    data = result({"cpu_id": {"vendor": "AuthenticAMD", "family": "25", "model": "17"},
                   "caches": {"L1d": "32K", "L2": "1024K"}},
                  {"cpu_image": "cpu.znver4"})
    out = run(write(tmp_path, data))
    assert out.returncode == 0, out.stderr
    machine = out.stdout.splitlines()[0]
    assert machine.startswith(
        "Machine: AMD EPYC (family 25, model 17), caches L1d 32K L2 1024K, kernels cpu.znver4, 1 thread")
    assert "peak 117.5 GFLOP/s" in machine


def test_older_outputs_without_the_machine_details(tmp_path: Path) -> None:
    out = run(write(tmp_path, result({}, {})))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Machine: AMD EPYC, 1 thread, torch 2.11.0")


def test_cells_are_the_rows_numbers_and_their_ratios(tmp_path: Path) -> None:
    data = result({}, {})
    row = data["rows"][0]
    out = run(write(tmp_path, data))
    cells = [c.strip() for c in out.stdout.splitlines()[-1].strip("|").split("|")]
    assert cells == ["delta_net", "(4,8,512,32)", f"{row['current_ms']:.1f}",
                     f"{row['current_gflops']:.1f}", f"{row['current_pct_peak']:.1f} %",
                     f"{row['speedup_vs_today']:.2f}×",
                     f"{row['eager_ms'] / row['current_ms']:.1f}×",
                     f"{row['chunkwise_ms'] / row['current_ms']:.2f}×"]
    baseline = run(write(tmp_path, data), "--side", "baseline")
    cells = [c.strip() for c in baseline.stdout.splitlines()[-1].strip("|").split("|")]
    assert cells[2] == f"{row['baseline_ms']:.1f}"
    assert cells[-1] == f"{row['chunkwise_ms'] / row['baseline_ms']:.2f}×"


@pytest.mark.parametrize("text", ["{not json", json.dumps({"rows": []})])
def test_a_file_that_is_not_an_output_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    out = run(path)
    assert out.returncode == 2
    assert str(path) in out.stderr and "not a fwp-bench-kernels output" in out.stderr


def test_the_committed_outputs_still_tabulate() -> None:
    for path in sorted(BENCH.glob("cpu_kernels*_1thread*.json")):
        out = run(path)
        assert out.returncode == 0, (path, out.stderr)
        assert out.stdout.count("\n| ") >= 2, path
