"""fwp.Layer against the C++ eager reference layers (fwp-run --layer): outputs, final
states and every gradient, for every model in models/, in f32 and f64; and state
carry-over across calls."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import fwp
from conftest import HEADS, MODELS, artifact, random_inputs, randomise_params, run_reference

TOLERANCE = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.float64: dict(rtol=1e-9, atol=1e-10)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("model", MODELS)
def test_matches_reference_layer(model: str, dtype: torch.dtype, tmp_path: Path,
                                 generator: torch.Generator) -> None:
    layer = fwp.load(artifact(model, dtype), heads=HEADS)
    randomise_params(layer, generator)
    seq, state = random_inputs(layer, batch=2, steps=5, dtype=dtype, generator=generator)
    leaves = {**seq, **{f"init.{n}": t for n, t in state.items()}}
    for t in leaves.values():
        t.requires_grad_(True)
    y, finals = layer(state={n: leaves[f"init.{n}"] for n in state}, **seq)
    grad_y = torch.randn(y.shape, generator=generator, dtype=dtype)
    grad_finals = {n: torch.randn(t.shape, generator=generator, dtype=dtype)
                   for n, t in finals.items()}
    loss = (y * grad_y).sum() + sum((finals[n] * g).sum() for n, g in grad_finals.items())
    loss.backward()

    reference_inputs = {**{k: v.detach() for k, v in leaves.items()},
                        **{n: p.detach() for n, p in layer.named_parameters()},
                        "grad.y": grad_y,
                        **{f"grad.final.{n}": g for n, g in grad_finals.items()}}
    ref = run_reference(model, reference_inputs, tmp_path)

    ours = {"y": y, **{f"final.{n}": t for n, t in finals.items()},
            **{f"grad.{k}": v.grad for k, v in leaves.items()},
            **{f"grad.{n}": p.grad for n, p in layer.named_parameters()}}
    assert set(ours) == set(ref), (sorted(ours), sorted(ref))
    for name, value in ours.items():
        assert value is not None, name
        torch.testing.assert_close(value.detach(), ref[name], **TOLERANCE[dtype], msg=name)


@pytest.mark.parametrize("model", MODELS)
def test_state_carry_over(model: str, generator: torch.Generator) -> None:
    """Two calls, the second starting from the first's final states, equal one call over
    the joined sequence: outputs, final states and gradients."""
    layer = fwp.load(artifact(model, torch.float64), heads=HEADS)
    randomise_params(layer, generator)
    seq, state = random_inputs(layer, batch=2, steps=7, dtype=torch.float64, generator=generator)
    for t in [*seq.values(), *state.values()]:
        t.requires_grad_(True)

    y, finals = layer(state=state, **seq)
    y1, mid = layer(state=state, **{n: t[:, :, :3].contiguous() for n, t in seq.items()})
    y2, finals2 = layer(state=mid, **{n: t[:, :, 3:].contiguous() for n, t in seq.items()})
    torch.testing.assert_close(torch.cat([y1, y2], dim=2), y, rtol=1e-10, atol=1e-12)
    for name in finals:
        torch.testing.assert_close(finals2[name], finals[name], rtol=1e-10, atol=1e-12)

    leaves = [*seq.values(), *state.values(), *layer.parameters()]
    one = torch.autograd.grad(y.square().sum() + sum(f.sum() for f in finals.values()), leaves)
    two = torch.autograd.grad(torch.cat([y1, y2], dim=2).square().sum()
                              + sum(f.sum() for f in finals2.values()), leaves)
    for a, b in zip(one, two):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("model", MODELS)
def test_gradcheck_f64(model: str, generator: torch.Generator) -> None:
    """Finite differences against the compiled backward, through the seq inputs, the
    params and the initial states."""
    layer = fwp.load(artifact(model, torch.float64), heads=1)
    randomise_params(layer, generator)
    seq, state = random_inputs(layer, batch=1, steps=3, dtype=torch.float64, generator=generator)
    names = [*seq, *state, *(n for n, _ in layer.named_parameters())]
    values = [*seq.values(), *state.values(), *(p.detach() for p in layer.parameters())]
    values = [v.clone().requires_grad_(True) for v in values]
    seq_n, state_n = len(seq), len(state)

    def run(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        s = dict(zip(names[:seq_n], tensors[:seq_n]))
        st = dict(zip(names[seq_n:seq_n + state_n], tensors[seq_n:seq_n + state_n]))
        params = dict(zip(names[seq_n + state_n:], tensors[seq_n + state_n:]))
        y, finals = torch.func.functional_call(layer, params, args=(), kwargs={"state": st, **s})
        return (y, *finals.values())

    assert torch.autograd.gradcheck(run, tuple(values), eps=1e-6, atol=1e-5, rtol=1e-4,
                                    fast_mode=True)
