"""fwp.load / fwp.Layer / fwp.signature / fwp.compile: the Python API itself."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import fwp
from conftest import MODELS, artifact, random_inputs
from fwp._paths import REPO_ROOT, compiler_path


def test_signature_of_delta_net() -> None:
    sig = fwp.signature(artifact("delta_net"))
    assert sig.layer == "delta_net"
    assert sig.dtype == "float32"
    assert sig.dims == {"d": 16}
    assert [(s.name, s.shape) for s in sig.seq] == [
        ("q", (16,)), ("k", (16,)), ("v", (16,)), ("beta", (1,))]
    assert [(s.name, s.shape) for s in sig.states] == [("W", (16, 16))]
    assert sig.params == ()
    assert sig.output == fwp.TensorSpec("y", (16,))


@pytest.mark.parametrize("model", MODELS)
def test_every_model_loads_and_prints(model: str) -> None:
    layer = fwp.load(artifact(model), heads=4)
    text = str(layer)
    assert model in text and "dims=" in text
    for spec in layer.signature.params:
        assert getattr(layer, spec.name).shape == (4, *spec.shape)


def test_params_are_initialised_like_fwp_train() -> None:
    # rdn: matrices R_* ~ randn / sqrt(d), the vector r_b zero; delta_mlp: LayerNorm
    # gain one, bias zero (runtime/train/src/Model.cpp).
    torch.manual_seed(0)
    rdn = fwp.load(artifact("rdn"), heads=64)
    d = rdn.signature.dims["d"]
    for name, p in rdn.named_parameters():
        assert isinstance(p, torch.nn.Parameter) and p.requires_grad
        if p.dim() == 3:
            assert abs(p.std().item() * math.sqrt(d) - 1) < 0.05, name
            assert abs(p.mean().item()) < 0.02, name
        else:
            assert torch.count_nonzero(p) == 0, name
    mlp = fwp.load(artifact("delta_mlp"), heads=2)
    params = dict(mlp.named_parameters())
    assert params, "delta_mlp has LayerNorm params"
    for name, p in params.items():
        expected = 1.0 if name.startswith("ln_weight") else 0.0
        assert torch.all(p == expected), name


def test_no_grad_forward_equals_training_forward(generator: torch.Generator) -> None:
    layer = fwp.load(artifact("delta_rnn"))
    seq, state = random_inputs(layer, 2, 4, torch.float32, generator)
    with torch.no_grad():
        y0, f0 = layer(state=state, **seq)
    y1, f1 = layer(state=state, **{n: t.requires_grad_(True) for n, t in seq.items()})
    assert y1.requires_grad and not y0.requires_grad
    torch.testing.assert_close(y0, y1.detach(), rtol=0, atol=0)
    for n in f0:
        torch.testing.assert_close(f0[n], f1[n].detach(), rtol=0, atol=0)


def test_bfloat16_inputs(generator: torch.Generator) -> None:
    layer = fwp.load(artifact("delta_net"))
    seq, _ = random_inputs(layer, 2, 5, torch.float32, generator)
    y32, f32 = layer(**seq)
    narrow = {n: t.to(torch.bfloat16).requires_grad_(True) for n, t in seq.items()}
    y16, f16 = layer(**narrow)
    assert y16.dtype == torch.bfloat16 and f16["W"].dtype == torch.float32
    torch.testing.assert_close(y16.float(), y32, rtol=0.05, atol=0.05)
    y16.float().sum().backward()
    assert all(t.grad is not None and t.grad.dtype == torch.bfloat16 for t in narrow.values())


def test_partial_initial_state_starts_the_rest_at_zero(generator: torch.Generator) -> None:
    layer = fwp.load(artifact("delta_rnn", torch.float64))
    seq, state = random_inputs(layer, 1, 3, torch.float64, generator)
    some = dict(list(state.items())[:1])
    rest = {n: torch.zeros_like(t) for n, t in list(state.items())[1:]}
    y_partial, _ = layer(state=some, **seq)
    y_full, _ = layer(state={**some, **rest}, **seq)
    torch.testing.assert_close(y_partial, y_full, rtol=0, atol=0)


@pytest.mark.skipif(not compiler_path().is_file(), reason="fwp-compile is not built here")
def test_compile_runs_fwp_compile(tmp_path: Path) -> None:
    out = fwp.compile(REPO_ROOT / "models" / "delta_net.mlir", dims={"d": 5}, cuda=False,
                      out=tmp_path / "dn5.fwpk")
    sig = fwp.signature(out)
    assert sig.dims == {"d": 5} and not sig.cuda
    layer = fwp.load(out)
    y, finals = layer(q=torch.randn(1, 1, 2, 5), k=torch.randn(1, 1, 2, 5),
                      v=torch.randn(1, 1, 2, 5), beta=torch.randn(1, 1, 2, 1))
    assert y.shape == (1, 1, 2, 5) and finals["W"].shape == (1, 1, 5, 5)
    with pytest.raises(fwp.FwpError, match=r"(?s)fwp-compile failed.*no dim named .d_nope."):
        fwp.compile(REPO_ROOT / "models" / "delta_net.mlir", dims={"d_nope": 3},
                    out=tmp_path / "bad.fwpk")


def test_compile_without_compiler(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FWP_COMPILE", str(tmp_path / "no-fwp-compile"))
    with pytest.raises(fwp.FwpError, match="fwp-compile is not built"):
        fwp.compile(REPO_ROOT / "models" / "delta_net.mlir")


def test_artifacts_of_every_model_are_built() -> None:
    for model in MODELS:
        assert artifact(model).is_file(), model
        assert artifact(model, torch.float64).is_file(), model


def test_params_take_the_initial_values_the_ir_asks_for() -> None:
    # models/retnet.mlir: fwp.param_init = {decay = "linspace:3.0:7.0"}, i.e. the decay
    # logits spaced evenly from 3 (first head) to 7 (last head), like fwp-train.
    layer = fwp.load(artifact("retnet"), heads=5)
    assert layer.signature.param_inits == {"decay": "linspace:3.0:7.0"}
    torch.testing.assert_close(layer.decay.detach().reshape(5),
                               torch.tensor([3.0, 4.0, 5.0, 6.0, 7.0]))
