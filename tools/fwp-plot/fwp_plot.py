"""fwp-plot: learning curves of fwp-train, fwp-lm and fwp-atari runs.

Reads the ``metrics.jsonl`` of one or more run folders and writes one chart,
as PNG and SVG: training loss and the validation score (accuracy, perplexity
or episode return) against the training step and against wall-clock time,
every run in its own colour with a legend. See docs/training.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

EXAMPLES = """\
examples:
  fwp-plot runs/readme_codeexec                    # runs/readme_codeexec/learning_curves.{png,svg}
  fwp-plot runs/listops_rdn runs/listops_lstm -o plots/listops --title "ListOps depth 10"
"""


class PlotError(Exception):
    """A problem with the input, reported as ``error: <message>`` (exit 2)."""


@dataclass
class Series:
    """One curve: x by step and by wall time, y."""

    steps: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)


@dataclass
class Run:
    """What a run folder's metrics.jsonl holds, as curves."""

    name: str
    kind: str  # "algorithmic", "lm" or "atari"
    loss: Series
    score: Series
    loss_label: str
    score_label: str
    step_label: str


def _read_records(path: Path) -> list[tuple[int, dict]]:
    """The JSON objects of a metrics.jsonl with their line numbers."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise PlotError(f"{path}: cannot read: {error.strerror}") from error
    except UnicodeDecodeError as error:
        raise PlotError(f"{path}: not UTF-8 text") from error
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise PlotError(f"{path}:{number}: not valid JSON ({error.msg})") from error
        if not isinstance(record, dict):
            raise PlotError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        records.append((number, record))
    if not records:
        raise PlotError(f"{path}: holds no metrics records")
    return records


def _number(path: Path, number: int, record: dict, key: str, allow_null: bool = False) -> float:
    """record[key] as a float; a clear error naming file:line otherwise."""
    if key not in record:
        raise PlotError(f"{path}:{number}: the record has no '{key}'")
    value = record[key]
    if value is None and allow_null:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PlotError(f"{path}:{number}: '{key}' is {json.dumps(value)}, not a number")
    return float(value)


class _WallClock:
    """Wall time across resumed sessions: each session's elapsed_s restarts at
    0, so a drop continues from where the previous session ended."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.last = 0.0

    def __call__(self, elapsed: float) -> float:
        if elapsed + self.offset < self.last:
            self.offset = self.last
        self.last = elapsed + self.offset
        return self.last


def _loop_run(name: str, path: Path, records: list[tuple[int, dict]]) -> Run:
    """fwp-train and fwp-lm (the shared TrainingLoop): "split" records."""
    loss = Series()
    valid: list[tuple[int, dict]] = []
    clock = _WallClock()
    for number, record in records:
        split = record["split"]
        if split == "train":
            loss.steps.append(_number(path, number, record, "step"))
            loss.values.append(_number(path, number, record, "loss"))
            loss.seconds.append(clock(_number(path, number, record, "elapsed_s")))
        elif split == "valid":
            valid.append((number, record))
        else:
            raise PlotError(f"{path}:{number}: unknown split {json.dumps(split)}")
    is_lm = any("ppl" in record for _, record in valid)
    key = "ppl" if is_lm else "acc"
    score = Series()
    for number, record in valid:
        step = _number(path, number, record, "step")
        score.steps.append(step)
        score.values.append(_number(path, number, record, key))
        score.seconds.append(_seconds_at(step, loss))
    if is_lm:
        label = "validation perplexity"
    elif any("print_acc" in record for _, record in valid):
        label = "validation sequence accuracy"
    else:
        label = "validation accuracy"
    return Run(name, "lm" if is_lm else "algorithmic", loss, score, "training loss", label, "step")


def _seconds_at(step: float, loss: Series) -> float:
    """Wall time at `step`, interpolated from the training records (a
    validation record has none; it follows the training record of its step)."""
    if not loss.steps:
        return math.nan
    points = list(zip(loss.steps, loss.seconds))
    if step <= points[0][0]:
        return points[0][1] * step / points[0][0] if points[0][0] > 0 else points[0][1]
    for (s0, t0), (s1, t1) in zip(points, points[1:]):
        if s0 <= step <= s1:
            return t0 if s1 == s0 else t0 + (t1 - t0) * (step - s0) / (s1 - s0)
    return points[-1][1]


def _atari_run(name: str, path: Path, records: list[tuple[int, dict]]) -> Run:
    """fwp-atari: one record per log interval, "steps" and "total_loss"."""
    loss, score = Series(), Series()
    clock = _WallClock()
    for number, record in records:
        step = _number(path, number, record, "steps")
        seconds = clock(_number(path, number, record, "elapsed_s"))
        loss.steps.append(step)
        loss.seconds.append(seconds)
        loss.values.append(_number(path, number, record, "total_loss"))
        mean = _number(path, number, record, "interval_mean_score", allow_null=True)
        if not math.isnan(mean):  # no episode ended in this interval
            score.steps.append(step)
            score.seconds.append(seconds)
            score.values.append(mean)
    return Run(name, "atari", loss, score, "training loss (total)",
               "episode return (mean per interval)", "agent step")


def load_run(folder: Path, name: str | None = None) -> Run:
    """Reads `folder`/metrics.jsonl (or a metrics file given directly)."""
    if not folder.exists():
        raise PlotError(f"{folder}: no such run folder or metrics file")
    path = folder / "metrics.jsonl" if folder.is_dir() else folder
    if not path.exists():
        raise PlotError(f"{path}: no such file (is {folder} a run folder of fwp-train, "
                        "fwp-lm or fwp-atari?)")
    records = _read_records(path)
    label = name or (folder.name if folder.is_dir() else folder.parent.name)
    first_number, first = records[0]
    if "split" in first:
        for number, record in records:
            if "split" not in record:
                raise PlotError(f"{path}:{number}: the record has no 'split' "
                                "(fwp-train/fwp-lm records all have one)")
        return _loop_run(label, path, records)
    if "total_loss" in first:
        return _atari_run(label, path, records)
    raise PlotError(f"{path}:{first_number}: not a metrics record of fwp-train, fwp-lm "
                    "or fwp-atari (no 'split' nor 'total_loss')")


def plot(runs: list[Run], out: Path, title: str | None = None) -> list[Path]:
    """Writes out.png and out.svg; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text
    matplotlib.rcParams["svg.hashsalt"] = "fwp-plot"  # reproducible ids
    import matplotlib.pyplot as plt

    kinds = sorted({run.kind for run in runs})
    if len(kinds) > 1:
        raise PlotError("cannot draw runs of different kinds on one chart: "
                        + ", ".join(f"{run.name} ({run.kind})" for run in runs))
    figure, axes = plt.subplots(2, 2, figsize=(10, 6.4), dpi=80, squeeze=False)
    for index, run in enumerate(runs):
        color = f"C{index % 10}"
        for row, (series, what) in enumerate(((run.loss, "loss"), (run.score, "score"))):
            for column, (xs, axis) in enumerate(((series.steps, "step"), (series.seconds, "time"))):
                (line,) = axes[row][column].plot(
                    xs, series.values, color=color, marker="." if len(xs) < 30 else None,
                    label=run.name)
                line.set_gid(f"{run.name}/{what}/{axis}")
    first = runs[0]
    for column, xlabel in enumerate((first.step_label, "wall time (s)")):
        axes[0][column].set_ylabel(first.loss_label)
        axes[1][column].set_ylabel(first.score_label)
        axes[1][column].set_xlabel(xlabel)
        for row in range(2):
            axes[row][column].grid(True, alpha=0.3)
    if first.kind == "lm":
        for column in range(2):
            axes[1][column].set_yscale("log")
    axes[0][0].legend(loc="best", fontsize="small")
    figure.suptitle(title or "learning curves: " + ", ".join(run.name for run in runs))
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [out.with_name(out.name + ".png"), out.with_name(out.name + ".svg")]
    for path in paths:
        figure.savefig(path, metadata={"Date": None} if path.suffix == ".svg" else None)
    plt.close(figure)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fwp-plot",
        description="Learning curves (PNG and SVG) of fwp-train, fwp-lm and fwp-atari runs: "
        "training loss and validation accuracy / perplexity / episode return, "
        "against step and against wall time.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR",
                        help="run folder holding metrics.jsonl (or the file itself)")
    parser.add_argument("-o", "--out", type=Path,
                        help="output path without extension; writes OUT.png and OUT.svg "
                        "(default: RUN_DIR/learning_curves of the first run)")
    parser.add_argument("--name", action="append", default=[],
                        help="legend name of each run, in order (default: folder names)")
    parser.add_argument("--title", help="chart title")
    args = parser.parse_args(argv)
    if args.name and len(args.name) != len(args.runs):
        parser.error(f"--name given {len(args.name)} times for {len(args.runs)} runs")
    try:
        names = args.name or [None] * len(args.runs)
        runs = [load_run(folder, name) for folder, name in zip(args.runs, names)]
        first = args.runs[0]
        out = args.out or (first if first.is_dir() else first.parent) / "learning_curves"
        for path in plot(runs, out, args.title):
            print(path)
    except PlotError as error:
        print(f"fwp-plot: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
