"""Tests of fwp-plot on runs made here by the real fwp-train, fwp-lm and
fwp-atari (tiny settings), and on malformed metrics files.

The tools come from the environment (FWP_TRAIN, FWP_LM, FWP_ATARI: set by
ctest, see tools/fwp-plot/CMakeLists.txt); a test whose tool is not built is
skipped with the reason. Each chart is checked against the run's own
metrics.jsonl, read here independently of fwp_plot: the SVG must hold one
line per (run, panel) with one vertex per record.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
LAUNCHER = HERE.parent / "fwp-plot"
SVG = "{http://www.w3.org/2000/svg}"


def tool(variable: str) -> str:
    path = os.environ.get(variable, "")
    if not path or not os.access(path, os.X_OK):
        pytest.skip(f"{variable} is not set to a built tool (ctest sets it when the runtime is built)")
    return path


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result


def fwp_plot(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, FWP_PYTHON=sys.executable)
    return subprocess.run([str(LAUNCHER), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def svg_lines(path: Path) -> dict[str, int]:
    """gid of every drawn line -> number of vertices of its path (0: empty)."""
    lines = {}
    for group in ET.parse(path).getroot().iter(f"{SVG}g"):
        gid = group.get("id", "")
        if "/" not in gid:
            continue
        paths = list(group.iter(f"{SVG}path"))
        lines[gid] = len(re.findall(r"[ML]", paths[0].get("d", ""))) if paths else 0
    return lines


def check_chart(out: Path, expected: dict[str, int]) -> None:
    png = out.with_name(out.name + ".png")
    svg = out.with_name(out.name + ".svg")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size < 200_000, "keep the PNGs small"
    lines = svg_lines(svg)
    for gid, count in expected.items():
        assert gid in lines, f"{svg} has no line {gid}; it has {sorted(lines)}"
        assert lines[gid] == count, f"{gid}: {lines[gid]} points, the metrics have {count}"
    legend = {t.text for t in ET.parse(svg).getroot().iter(f"{SVG}text")}
    for gid in expected:
        assert gid.split("/")[0] in legend, f"legend lacks {gid.split('/')[0]}"


# A tiny Delta Net (eager reference layer) for fwp-train and fwp-lm.
TINY_MODEL = """
[model]
kind = "fwp"
layer = "delta_net"
reference = true
layers = 1
hidden = 16
heads = 2
ff_mult = 2
dropout = 0.0
"""

TRAIN_CONFIG = """
name = "tiny"
[data]
task = "codeexec"
dir = "{data}"
vars = 2
statements = 5
seed = 1
train = 64
valid = 16
test = 16
{model}[train]
steps = 12
batch = 8
lr = 3e-3
log_every = 3
eval_every = 6
checkpoint_every = 0
seed = {seed}
threads = 1
"""


def train_run(tmp: Path, name: str, seed: int) -> Path:
    config = tmp / f"{name}.toml"
    config.write_text(TRAIN_CONFIG.format(data=tmp / "data", seed=seed, model=TINY_MODEL))
    run([tool("FWP_TRAIN"), "--config", str(config), "--run-dir", str(tmp / name), "--plain"], tmp)
    return tmp / name


def loop_counts(run_dir: Path, score: str) -> dict[str, int]:
    metrics = records(run_dir / "metrics.jsonl")
    train = sum(1 for r in metrics if r["split"] == "train")
    valid = sum(1 for r in metrics if r["split"] == "valid" and score in r)
    name = run_dir.name
    return {f"{name}/loss/step": train, f"{name}/loss/time": train,
            f"{name}/score/step": valid, f"{name}/score/time": valid}


def test_two_fwp_train_runs_on_one_chart(tmp_path: Path) -> None:
    first = train_run(tmp_path, "seed1", 1)
    second = train_run(tmp_path, "seed2", 2)
    expected = loop_counts(first, "acc") | loop_counts(second, "acc")
    # 12 steps, log every 3, validate every 6: 4 train and 2 valid records.
    assert expected["seed1/loss/step"] == 4 and expected["seed1/score/step"] == 2
    result = fwp_plot(str(first), str(second), "-o", str(tmp_path / "chart"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(tmp_path / "chart.png"), str(tmp_path / "chart.svg")]
    check_chart(tmp_path / "chart", expected)
    svg = (tmp_path / "chart.svg").read_text()
    assert "validation sequence accuracy" in svg and "wall time (s)" in svg


def test_default_output_is_in_the_run_folder(tmp_path: Path) -> None:
    first = train_run(tmp_path, "only", 1)
    result = fwp_plot(str(first), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    check_chart(first / "learning_curves", loop_counts(first, "acc"))


def test_fwp_lm_run(tmp_path: Path) -> None:
    fwp_lm = tool("FWP_LM")
    data = tmp_path / "corpus"
    data.mkdir()
    rng = random.Random(1)
    words = [f"w{i}" for i in range(40)]
    for split, lines in (("train", 400), ("valid", 40), ("test", 40)):
        text = "\n".join(" ".join(rng.choice(words) for _ in range(12)) for _ in range(lines))
        (data / f"wiki.{split}.tokens").write_text(text + "\n")
    config = tmp_path / "lm.toml"
    config.write_text(f"""
name = "lm"
[data]
dir = "{data}"
{TINY_MODEL}[lm]
cutoffs = []
[train]
steps = 8
batch = 4
context = 16
lr = 1e-3
log_every = 2
eval_every = 4
checkpoint_every = 0
eval_batch = 4
run_dir = "{tmp_path / 'lm'}"
[eval]
modes = ["segments"]
max_tokens = 200
""")
    run([fwp_lm, "--threads", "1", "train", "--config", str(config), "--no-progress-bar"], tmp_path)
    expected = loop_counts(tmp_path / "lm", "ppl")
    assert expected["lm/score/step"] == 2
    result = fwp_plot(str(tmp_path / "lm"), "-o", str(tmp_path / "lm_chart"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    check_chart(tmp_path / "lm_chart", expected)
    assert "validation perplexity" in (tmp_path / "lm_chart.svg").read_text()


def test_fwp_atari_run(tmp_path: Path) -> None:
    fwp_atari = tool("FWP_ATARI")
    rom_dir = Path(os.environ.get("FWP_ALE_ROMS", ""))
    if not (rom_dir / "breakout.bin").exists():
        pytest.skip(f"ALE ROM breakout.bin not in FWP_ALE_ROMS={rom_dir} (scripts/setup_ale.sh)")
    config = tmp_path / "tiny.toml"
    config.write_text('[env]\ngame = "breakout"\n[model]\ncore = "lstm"\n'
                      "[train]\ntotal_steps = 50\nbatch_size = 2\nunroll_length = 5\n"
                      "actors = 1\nenvs_per_actor = 2\nlog_every_s = 0\n")
    run([fwp_atari, "train", "--config", str(config), "--run-dir", str(tmp_path / "atari")], tmp_path)
    metrics = records(tmp_path / "atari" / "metrics.jsonl")
    scores = sum(1 for r in metrics if r["interval_mean_score"] is not None)
    expected = {"atari/loss/step": len(metrics), "atari/loss/time": len(metrics),
                "atari/score/step": scores, "atari/score/time": scores}
    assert len(metrics) == 5  # 50 steps, 10 per update, one record each
    result = fwp_plot(str(tmp_path / "atari"), "-o", str(tmp_path / "atari_chart"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    check_chart(tmp_path / "atari_chart", expected)
    assert "episode return" in (tmp_path / "atari_chart.svg").read_text()


GOOD = [
    {"step": 10, "split": "train", "loss": 2.0, "acc": 0.1, "steps_per_s": 5.0, "elapsed_s": 2.0},
    {"step": 20, "split": "train", "loss": 1.5, "acc": 0.2, "steps_per_s": 5.0, "elapsed_s": 4.0},
    {"step": 20, "split": "valid", "loss": 1.4, "acc": 0.3, "best": True},
]


def write_metrics(folder: Path, lines: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@pytest.mark.parametrize(
    "bad, message",
    [
        ('{"step": 30, "split": "train", "loss": 1.0', "metrics.jsonl:3: not valid JSON"),
        ('[1, 2]', "metrics.jsonl:3: expected a JSON object"),
        ('{"step": 30, "split": "train", "elapsed_s": 6.0}', "metrics.jsonl:3: the record has no 'loss'"),
        ('{"step": 30, "split": "train", "loss": "x", "elapsed_s": 6}', "metrics.jsonl:3: 'loss' is \"x\""),
        ('{"step": 30, "split": "test", "loss": 1.0}', "metrics.jsonl:3: unknown split"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, bad: str, message: str) -> None:
    lines = [json.dumps(r) for r in GOOD[:2]] + [bad] + [json.dumps(GOOD[2])]
    folder = write_metrics(tmp_path / "broken", lines)
    result = fwp_plot(str(folder), cwd=tmp_path)
    assert result.returncode == 2
    assert f"fwp-plot: error: {folder}/{message}" in result.stderr, result.stderr
    assert not (folder / "learning_curves.png").exists()


def test_missing_folder_and_mixed_kinds_are_errors(tmp_path: Path) -> None:
    result = fwp_plot(str(tmp_path / "nowhere"), cwd=tmp_path)
    assert result.returncode == 2 and "nowhere: no such run folder" in result.stderr
    (tmp_path / "empty").mkdir()
    result = fwp_plot(str(tmp_path / "empty"), cwd=tmp_path)
    assert result.returncode == 2 and "empty/metrics.jsonl: no such file" in result.stderr
    loop = write_metrics(tmp_path / "loop", [json.dumps(r) for r in GOOD])
    atari = write_metrics(tmp_path / "atari", [json.dumps(
        {"steps": 10, "elapsed_s": 1.0, "total_loss": 0.5, "interval_mean_score": None})])
    result = fwp_plot(str(loop), str(atari), cwd=tmp_path)
    assert result.returncode == 2 and "different kinds" in result.stderr


def test_resumed_run_keeps_wall_time_increasing(tmp_path: Path) -> None:
    # A resumed session restarts elapsed_s at 0; the time axis must continue.
    resumed = GOOD + [{"step": 30, "split": "train", "loss": 1.2, "elapsed_s": 1.5},
                      {"step": 25, "split": "valid", "loss": 1.3, "acc": 0.4}]
    folder = write_metrics(tmp_path / "resumed", [json.dumps(r) for r in resumed])
    result = fwp_plot(str(folder), "-o", str(tmp_path / "r"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    sys.path.insert(0, str(HERE.parent))
    import fwp_plot as module

    loaded = module.load_run(folder)
    assert loaded.loss.seconds == [2.0, 4.0, 5.5]
    # A validation record takes the wall time of the training records around its step.
    assert loaded.score.seconds == [4.0, 4.75]
    assert loaded.score.values == [0.3, 0.4]


def test_help_has_examples(tmp_path: Path) -> None:
    result = fwp_plot("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "examples:" in result.stdout and "fwp-plot runs/" in result.stdout
    assert len(result.stdout.splitlines()) <= 60
