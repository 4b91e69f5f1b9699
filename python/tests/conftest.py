"""Shared fixtures of the fwp package's tests (run by ctest: python.test_*)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
from pathlib import Path

import pytest
import torch

import fwp
from fwp._paths import REPO_ROOT, build_dir, compiler_path

MODELS = sorted(p.stem for p in (REPO_ROOT / "models").glob("*.mlir"))
ARTIFACTS = build_dir() / "artifacts"
FWP_RUN = build_dir() / "runtime" / "core" / "fwp-run"
HEADS = 2

_DTYPES = {torch.float32: "F32", torch.float64: "F64"}
_TORCH = {"F32": torch.float32, "F64": torch.float64}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # A run that tested nothing must not pass (e.g. every test deselected).
    if session.testscollected == 0 and exitstatus == 0:
        session.exitstatus = 1


def artifact(model: str, dtype: torch.dtype = torch.float32) -> Path:
    """The artifact scripts/build.sh compiled for ``model`` (fails when it is missing)."""
    path = ARTIFACTS / ("f64" if dtype == torch.float64 else "") / f"{model}.fwpk"
    if not path.is_file():
        if not compiler_path().is_file():
            pytest.skip(f"{path} is missing and this build has no fwp-compile (a runtime-only "
                        f"build): copy build/artifacts of a full build to {ARTIFACTS}")
        pytest.fail(f"{path} is missing: run scripts/build.sh")
    return path


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """A minimal safetensors writer (the format: 8-byte header length, JSON, data)."""
    header: dict[str, object] = {}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        data = t.numpy().tobytes()
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    header.pop("__metadata__", None)
    data = raw[8 + length :]
    out = {}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        out[name] = torch.frombuffer(bytearray(data[begin:end]), dtype=_TORCH[entry["dtype"]]
                                     ).reshape(entry["shape"])
    return out


def run_reference(model: str, inputs: dict[str, torch.Tensor], tmp: Path) -> dict[str, torch.Tensor]:
    """The eager reference layer on ``inputs``, forward and backward, independent of
    the compiled kernels: the C++ reference (fwp-run --layer), which has every model."""
    assert FWP_RUN.is_file(), f"{FWP_RUN} is missing: run scripts/build.sh"
    write_safetensors(tmp / "in.safetensors", inputs)
    result = subprocess.run(
        [str(FWP_RUN), "--layer", model, "--inputs", str(tmp / "in.safetensors"),
         "--out", str(tmp / "out.safetensors"), "--backward"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    return read_safetensors(tmp / "out.safetensors")


def random_inputs(layer: fwp.Layer, batch: int, steps: int, dtype: torch.dtype,
                  generator: torch.Generator, device: str = "cpu"
                  ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Random seq inputs [B, H, T, ...] and initial states [B, H, ...] for ``layer``."""
    sig = layer.signature
    heads = layer.heads or HEADS
    seq = {s.name: torch.randn((batch, heads, steps, *s.shape), generator=generator,
                               dtype=dtype).to(device) for s in sig.seq}
    state = {s.name: 0.3 * torch.randn((batch, heads, *s.shape), generator=generator,
                                       dtype=dtype).to(device) for s in sig.states}
    return seq, state


def randomise_params(layer: fwp.Layer, generator: torch.Generator) -> None:
    """Random params, so that their gradients are exercised away from the init."""
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device))


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
