"""Bad input raises a Python exception whose message names what is wrong."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import fwp
from conftest import artifact
from fwp._paths import library_path


@pytest.fixture
def delta_net() -> fwp.Layer:
    return fwp.load(artifact("delta_net"))


def inputs(b: int = 2, h: int = 2, t: int = 3, d: int = 16, **kw: object) -> dict[str, torch.Tensor]:
    seq = {n: torch.randn(b, h, t, d, **kw) for n in ("q", "k", "v")}
    seq["beta"] = torch.randn(b, h, t, 1, **kw)
    return seq


def test_missing_and_unknown_names(delta_net: fwp.Layer) -> None:
    seq = inputs()
    del seq["k"]
    with pytest.raises(fwp.FwpError, match=r"missing \['k'\]"):
        delta_net(**seq)
    with pytest.raises(fwp.FwpError, match=r"unexpected \['key'\]"):
        delta_net(key=torch.zeros(1), **inputs())
    with pytest.raises(fwp.FwpError, match=r"unknown states \['R'\]"):
        delta_net(state={"R": torch.zeros(2, 2, 16, 16)}, **inputs())


def test_wrong_shapes(delta_net: fwp.Layer) -> None:
    seq = inputs()
    seq["beta"] = torch.randn(2, 2, 3)
    with pytest.raises(RuntimeError, match=r"tensor 'beta' \(seq input\) has shape \[2, 2, 3\]"):
        delta_net(**seq)
    seq = inputs(d=8)
    with pytest.raises(RuntimeError, match=r"'q'.*\[2, 2, 3, 8\]"):
        delta_net(**seq)
    with pytest.raises(RuntimeError, match=r"init.W"):
        delta_net(state={"W": torch.zeros(2, 2, 16, 15)}, **inputs())


def test_wrong_dtypes(delta_net: fwp.Layer) -> None:
    with pytest.raises(fwp.FwpError, match="has dtype torch.float64; this artifact computes in float32"):
        delta_net(**inputs(dtype=torch.float64))
    seq = inputs()
    seq["v"] = seq["v"].to(torch.bfloat16)
    with pytest.raises(fwp.FwpError, match="'v' has dtype torch.bfloat16 but 'q' has torch.float32"):
        delta_net(**seq)
    with pytest.raises(fwp.FwpError, match="has dtype torch.int64"):
        delta_net(**{n: t.long() for n, t in inputs().items()})
    f64 = fwp.load(artifact("delta_net", torch.float64))
    with pytest.raises(fwp.FwpError, match="takes float64 tensors"):
        f64(**inputs())


def test_non_contiguous(delta_net: fwp.Layer) -> None:
    seq = inputs()
    seq["q"] = torch.randn(2, 3, 2, 16).transpose(1, 2)
    with pytest.raises(fwp.FwpError, match="'q' is not contiguous"):
        delta_net(**seq)
    ops_inputs = [seq[n] for n in ("q", "k", "v", "beta")]
    with pytest.raises(RuntimeError, match="tensor 'q' is not contiguous"):
        torch.ops.fwp.forward(delta_net.path, ops_inputs)


def test_devices(delta_net: fwp.Layer) -> None:
    # A tensor on another device than the others.
    with pytest.raises(RuntimeError, match="tensor 'init.W' is on meta but 'q' is on cpu"):
        delta_net(state={"W": torch.zeros(2, 2, 16, 16, device="meta")}, **inputs())
    if torch.cuda.is_available():
        f64 = fwp.load(artifact("delta_net", torch.float64))
        with pytest.raises(RuntimeError, match="CPU kernels only"):
            f64(**inputs(dtype=torch.float64, device="cuda"))


def test_operator_argument_counts(delta_net: fwp.Layer) -> None:
    seq = list(inputs().values())
    with pytest.raises(RuntimeError, match=r"takes 4 tensors \(q, k, v, beta\) or 5"):
        torch.ops.fwp.forward(delta_net.path, seq[:3])
    outputs = torch.ops.fwp.forward_train(delta_net.path, seq)
    with pytest.raises(RuntimeError, match="takes 2 gradients"):
        torch.ops.fwp.backward(delta_net.path, seq, outputs[1:], [outputs[0]])
    with pytest.raises(RuntimeError, match="saved tensors"):
        torch.ops.fwp.backward(delta_net.path, seq, outputs[1:2], [outputs[0], None])
    bad = [t.clone() for t in outputs[1:]]
    bad[0] = bad[0][:, :, :8].contiguous()
    with pytest.raises(RuntimeError, match="'final.W' has shape"):
        torch.ops.fwp.backward(delta_net.path, seq, bad, [outputs[0], None])
    with pytest.raises(RuntimeError, match="'grad.y' has shape"):
        torch.ops.fwp.backward(delta_net.path, seq, outputs[1:], [outputs[0][:1], None])


def test_missing_artifact(tmp_path: Path) -> None:
    with pytest.raises(fwp.FwpError, match="no such artifact file"):
        fwp.load(tmp_path / "nothing.fwpk")
    with pytest.raises(fwp.FwpError, match="no such artifact file"):
        fwp.signature(tmp_path / "nothing.fwpk")


def test_corrupt_artifacts(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.fwpk"
    garbage.write_bytes(b"this is not an ELF file at all")
    with pytest.raises(RuntimeError, match="garbage.fwpk: not a .fwpk artifact"):
        fwp.load(garbage)
    truncated = tmp_path / "truncated.fwpk"
    data = artifact("delta_net").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(RuntimeError, match="truncated.fwpk"):
        fwp.load(truncated)
    # A shared library whose initialisers would register operators (and abort the
    # interpreter on the duplicate) is refused before any of its code runs.
    foreign = tmp_path / "foreign.fwpk"
    shutil.copy(library_path(), foreign)
    with pytest.raises(RuntimeError, match="foreign.fwpk: an ELF file, not a .fwpk container"):
        fwp.load(foreign)


def test_heads_required_for_params() -> None:
    with pytest.raises(fwp.FwpError, match=r"per-head params \(R_q"):
        fwp.load(artifact("rdn"))
    rdn = fwp.load(artifact("rdn"), heads=3)
    seq = {s.name: torch.randn(2, 2, 3, *s.shape) for s in rdn.signature.seq}
    with pytest.raises(RuntimeError, match=r"'R_\w+'.*\[3, "):
        rdn(**seq)
