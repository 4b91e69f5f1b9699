"""The decaying layers, written in IR alone (models/*.mlir), train in fwp-train and fwp-lm.

Issue 12 asks that a new layer needs no C++: the model stacks take its seq inputs, params
and states from the artifact's manifest. Each test trains a tiny model of one layer for a few
dozen steps on CPU and checks that the run succeeds and its training loss falls; the layers'
numerics are checked elsewhere (DecayLayerTest.cpp, test_reference.py against fwp-run --layer).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import artifact
from fwp._paths import build_dir

LAYERS = ["gated_delta_net", "retnet", "gla", "delta_product"]
FWP_TRAIN = build_dir() / "runtime" / "train" / "fwp-train"
FWP_LM = build_dir() / "runtime" / "lm" / "fwp-lm"


def _run(command: list[str]) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def _train_losses(metrics: Path, key: str) -> list[float]:
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return [r[key] for r in records if r.get("split") == "train" and key in r]


def _needs(tool: Path) -> None:
    if not tool.is_file():
        pytest.skip(f"{tool} is not built")


@pytest.mark.parametrize("layer", LAYERS)
def test_fwp_train_learns_with(layer: str, tmp_path: Path) -> None:
    _needs(FWP_TRAIN)
    config = tmp_path / "tiny.toml"
    config.write_text(
        f'name = "tiny_{layer}"\n'
        f'[data]\ntask = "codeexec"\ndir = "{tmp_path / "data"}"\n'
        "vars = 2\nstatements = 3\nseed = 1\ntrain = 256\nvalid = 32\ntest = 32\n"
        f'[model]\nkind = "fwp"\nlayer = "{layer}"\nartifact = "{artifact(layer)}"\n'
        "layers = 1\nhidden = 32\nheads = 2\nff_mult = 2\ndropout = 0.0\n"
        "[train]\nsteps = 60\nbatch = 16\nlr = 3e-3\nlog_every = 10\neval_every = 60\n"
        f'checkpoint_every = 60\nseed = 1\ndevice = "cpu"\nrun_dir = "{tmp_path / "run"}"\n')
    _run([str(FWP_TRAIN), "--config", str(config), "--plain", "--threads", "1"])
    losses = _train_losses(tmp_path / "run" / "metrics.jsonl", "loss")
    assert len(losses) == 6, losses
    assert losses[-1] < 0.8 * losses[0], f"{layer}: training loss did not fall: {losses}"


def _learnable_corpus(folder: Path) -> None:
    """A 7-token cycle with occasional noise: a model that learns anything gets it."""
    words = ["the", "cat", "sat", "on", "a", "mat", "."]
    state = 1
    for split, lines in (("train", 120), ("valid", 12), ("test", 12)):
        out = []
        for _ in range(lines):
            row = []
            for i in range(14):
                state = (state * 1103515245 + 12345) % 2**32
                row.append("dog" if (state >> 16) % 11 == 0 else words[i % 7])
            out.append(" " + " ".join(row) + " ")
        (folder / f"wiki.{split}.tokens").write_text("\n".join(out) + "\n")


@pytest.mark.parametrize("layer", LAYERS)
def test_fwp_lm_learns_with(layer: str, tmp_path: Path) -> None:
    _needs(FWP_LM)
    _learnable_corpus(tmp_path)
    config = tmp_path / "tiny.toml"
    config.write_text(
        f'name = "tiny_lm_{layer}"\n[data]\ndir = "{tmp_path}"\n'
        f'[model]\nkind = "fwp"\nlayer = "{layer}"\nartifact = "{artifact(layer)}"\n'
        "layers = 1\nhidden = 32\nheads = 2\nff_mult = 2\ndropout = 0.0\npos_encoding = true\n"
        "[lm]\ncutoffs = [4]\n"
        '[train]\ndevice = "cpu"\nseed = 4\nbatch = 4\ncontext = 16\ncarry_over = false\n'
        'steps = 40\nlr = 1e-2\nwarmup = 3\nschedule = "constant"\nclip = 0.25\nlog_every = 5\n'
        "eval_every = 40\ncheckpoint_every = 40\neval_batch = 2\n"
        f'run_dir = "{tmp_path / "run"}"\n'
        '[eval]\nmodes = ["segments"]\ncontext = 16\n')
    _run([str(FWP_LM), "--threads", "1", "train", "--config", str(config), "--no-progress-bar"])
    losses = _train_losses(tmp_path / "run" / "metrics.jsonl", "loss")
    assert len(losses) >= 6, losses
    assert losses[-1] < 0.7 * losses[0], f"{layer}: LM training loss did not fall: {losses}"
