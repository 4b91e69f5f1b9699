#!/usr/bin/env python3
"""A compiled fast-weight layer (fwp.Layer) inside a plain PyTorch training loop.

The task is code execution (docs/training.md): read a small program token by token and
predict, at every executed `print`, the printed value (else the blank `_`). The data
comes from `fwp-train gen-data` (generated on first use). The model is fwp-train's
block in a few lines of PyTorch: embedding -> [LN -> slow projection -> fwp layer ->
output projection -> + residual] -> [LN -> FFN -> + residual] -> LN -> head.

    .venv/bin/python examples/train_codeexec.py                 # CPU, about a minute
    .venv/bin/python examples/train_codeexec.py --device cuda --steps 600
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

import torch
from torch import nn

import fwp
from fwp._paths import REPO_ROOT, build_dir


def load_split(path: Path) -> tuple[list[list[str]], list[list[str]]]:
    """Programs and per-token targets of one data file (header line, then `tokens\ttargets`)."""
    programs, targets = [], []
    with path.open() as f:
        next(f)  # the header
        for line in f:
            tokens, labels = line.rstrip("\n").split("\t")
            programs.append(tokens.split(" "))
            targets.append(labels.split(" "))
    return programs, targets


def make_data(data_dir: Path, statements: int) -> None:
    fwp_train = build_dir() / "runtime" / "train" / "fwp-train"
    if not fwp_train.is_file():
        raise SystemExit(f"{fwp_train} is missing: run scripts/build.sh")
    subprocess.run([str(fwp_train), "gen-data", "--task", "codeexec", "--vars", "3",
                    "--statements", str(statements), "--train", "4000", "--valid", "200",
                    "--test", "200", "--out", str(data_dir)], check=True)


def encode(sequences: list[list[str]], index: dict[str, int], pad: int) -> torch.Tensor:
    """Right-padded with `pad` to the longest sequence."""
    length = max(len(s) for s in sequences)
    out = torch.full((len(sequences), length), pad, dtype=torch.long)
    for i, s in enumerate(sequences):
        out[i, : len(s)] = torch.tensor([index[t] for t in s])
    return out


class FastWeightBlock(nn.Module):
    """Pre-LN residual block around an fwp.Layer, as fwp-train builds it."""

    def __init__(self, layer: fwp.Layer, hidden: int, heads: int) -> None:
        super().__init__()
        self.layer, self.heads = layer, heads
        self.sizes = [s.shape[0] for s in layer.signature.seq]
        self.norm = nn.LayerNorm(hidden)
        self.slow = nn.Linear(hidden, heads * sum(self.sizes), bias=False)
        self.out = nn.Linear(heads * layer.signature.output.shape[0], hidden, bias=False)
        self.ffn = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, 4 * hidden), nn.ReLU(),
                                 nn.Linear(4 * hidden, hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        z = self.slow(self.norm(x)).view(b, t, self.heads, -1).transpose(1, 2)
        seq = {spec.name: part.contiguous()
               for spec, part in zip(self.layer.signature.seq, z.split(self.sizes, dim=-1))}
        y, _ = self.layer(**seq)
        x = x + self.out(y.transpose(1, 2).reshape(b, t, -1))
        return x + self.ffn(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--artifact", default=str(build_dir() / "artifacts" / "delta_net.fwpk"),
                        help="a .fwpk with d = 16 (default: build/artifacts/delta_net.fwpk)")
    parser.add_argument("--data", default=str(REPO_ROOT / "data" / "codeexec3_s20"),
                        help="data folder; generated with fwp-train gen-data if missing")
    parser.add_argument("--statements", type=int, default=20, help="statements per program")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    device = torch.device(args.device)

    data_dir = Path(args.data)
    if not (data_dir / "train.txt").is_file():
        make_data(data_dir, args.statements)
    train_x, train_y = load_split(data_dir / "train.txt")
    valid_x, valid_y = load_split(data_dir / "valid.txt")
    vocab = {"<pad>": 0}
    for program in train_x + valid_x:
        for token in program:
            vocab.setdefault(token, len(vocab))
    # Class 0 is the blank "_", 1..25 the values -8..16; padding is ignored (-100).
    classes = {value: i for i, value in enumerate(["_"] + [str(v) for v in range(-8, 17)])}
    xs, ys = encode(train_x, vocab, 0).to(device), encode(train_y, classes, -100).to(device)
    vx, vy = encode(valid_x, vocab, 0).to(device), encode(valid_y, classes, -100).to(device)

    layer = fwp.load(args.artifact, heads=args.heads)
    model = nn.Sequential(nn.Embedding(len(vocab), args.hidden),
                          FastWeightBlock(layer, args.hidden, args.heads),
                          nn.LayerNorm(args.hidden), nn.Linear(args.hidden, 26)).to(device)
    print(f"layer: {layer}")
    print(f"{sum(p.numel() for p in model.parameters())} params, {len(train_x)} programs of "
          f"{xs.shape[1]} tokens at most, device {device}")
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss(ignore_index=-100)
    start = time.time()
    for step in range(1, args.steps + 1):
        index = torch.randint(0, xs.shape[0], (args.batch,), device=device)
        logits = model(xs[index])
        loss = loss_fn(logits.flatten(0, 1), ys[index].flatten())
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step == 1 or step % 50 == 0:
            with torch.no_grad():
                valid_logits = model(vx)
                valid_loss = loss_fn(valid_logits.flatten(0, 1), vy.flatten()).item()
                values = vy > 0  # positions whose target is a printed value
                hit = valid_logits.argmax(-1) == vy
                print_acc = (hit & values).sum().item() / max(values.sum().item(), 1)
            print(f"step {step:4d}  train loss {loss.item():.3f}  valid loss {valid_loss:.3f}  "
                  f"valid print acc {print_acc:.3f}  ({time.time() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
