"""The operators on checkpointed layers (``--backward=checkpoint:C``): ``forward_train``
keeps only the states at every segment's start, not the per-step tape, and ``backward``
recomputes one segment at a time; the gradients still equal the eager reference's.

The decaying layers are checkpointed by default (every 64 steps); these tests compile them
with segments of 3 steps, so that a call of 8 steps has three segments, the last one short.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import fwp
from conftest import HEADS, random_inputs, randomise_params, run_reference
from fwp._paths import REPO_ROOT, compiler_path

CHECKPOINTED = ["gated_delta_net", "retnet", "gla"]
EVERY = 3
STEPS = 8  # segments of 3, 3 and 2 steps
SEGMENTS = math.ceil(STEPS / EVERY)

pytestmark = pytest.mark.skipif(not compiler_path().is_file(),
                                reason="fwp-compile is not built here (a runtime-only build)")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """``compiled(model, dtype)``: the model compiled with checkpoints every 3 steps."""
    folder = tmp_path_factory.mktemp("checkpointed")
    cache: dict[tuple[str, str], Path] = {}

    def get(model: str, dtype: str = "f32") -> Path:
        if (model, dtype) not in cache:
            cache[(model, dtype)] = fwp.compile(
                REPO_ROOT / "models" / f"{model}.mlir", cuda=False, dtype=dtype,
                backward=f"checkpoint:{EVERY}", out=folder / f"{model}_{dtype}.fwpk")
        return cache[(model, dtype)]

    return get


def op_inputs(path: Path, dtype: torch.dtype, generator: torch.Generator
              ) -> tuple[fwp.Layer, list[torch.Tensor], int]:
    """A layer, the operators' inputs (seq, params, initial states) and the number of states."""
    layer = fwp.load(path, heads=HEADS)
    randomise_params(layer, generator)
    seq, state = random_inputs(layer, batch=2, steps=STEPS, dtype=dtype, generator=generator)
    inputs = [*seq.values(), *(p.detach() for p in layer.parameters()), *state.values()]
    return layer, inputs, len(state)


@pytest.mark.parametrize("model", CHECKPOINTED)
def test_forward_train_keeps_the_segment_starts(model: str, compiled,  # type: ignore[no-untyped-def]
                                                generator: torch.Generator) -> None:
    path = compiled(model)
    assert fwp.signature(path).checkpoint_every == EVERY
    layer, inputs, states = op_inputs(path, torch.float32, generator)
    plain = torch.ops.fwp.forward(str(layer.path), inputs)
    train = torch.ops.fwp.forward_train(str(layer.path), inputs)
    assert len(train) == 1 + states + SEGMENTS * states
    for a, b in zip(plain, train):  # y and the final states
        torch.testing.assert_close(b, a, rtol=0, atol=0)

    # Checkpoint k holds the states after the first k * EVERY steps: a forward over that
    # prefix ends in them (segment 0: the initial states).
    seq_count = len(fwp.signature(path).seq)
    initial = inputs[len(inputs) - states:]
    for segment in range(SEGMENTS):
        kept = train[1 + states + segment * states: 1 + states + (segment + 1) * states]
        if segment == 0:
            expected = initial
        else:
            prefix = [t[:, :, : segment * EVERY].contiguous() for t in inputs[:seq_count]]
            expected = torch.ops.fwp.forward(str(layer.path),
                                             [*prefix, *inputs[seq_count:]])[1:]
        for got, want in zip(kept, expected):
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)

    # What is kept for the backward: the segments' starting states, not the states of
    # every step (the backward recomputes its tape one segment at a time).
    kept_elements = sum(t.numel() for t in train[1 + states:])
    state_elements = sum(t.numel() for t in initial)
    assert kept_elements == SEGMENTS * state_elements
    assert kept_elements < STEPS * state_elements


@pytest.mark.parametrize("model", CHECKPOINTED)
def test_gradients_match_the_reference(model: str, compiled,  # type: ignore[no-untyped-def]
                                       tmp_path: Path, generator: torch.Generator) -> None:
    """Through fwp.Layer (forward_train, then backward segment by segment), f64."""
    layer = fwp.load(compiled(model, "f64"), heads=HEADS)
    randomise_params(layer, generator)
    seq, state = random_inputs(layer, batch=2, steps=STEPS, dtype=torch.float64,
                               generator=generator)
    leaves = {**seq, **{f"init.{n}": t for n, t in state.items()}}
    for t in leaves.values():
        t.requires_grad_(True)
    y, finals = layer(state={n: leaves[f"init.{n}"] for n in state}, **seq)
    grad_y = torch.randn(y.shape, generator=generator, dtype=torch.float64)
    grad_finals = {n: torch.randn(t.shape, generator=generator, dtype=torch.float64)
                   for n, t in finals.items()}
    loss = (y * grad_y).sum() + sum((finals[n] * g).sum() for n, g in grad_finals.items())
    loss.backward()

    ref = run_reference(model, {**{k: v.detach() for k, v in leaves.items()},
                                **{n: p.detach() for n, p in layer.named_parameters()},
                                "grad.y": grad_y,
                                **{f"grad.final.{n}": g for n, g in grad_finals.items()}},
                        tmp_path)
    ours = {"y": y, **{f"final.{n}": t for n, t in finals.items()},
            **{f"grad.{k}": v.grad for k, v in leaves.items()},
            **{f"grad.{n}": p.grad for n, p in layer.named_parameters()}}
    assert set(ours) == set(ref), (sorted(ours), sorted(ref))
    for name, value in ours.items():
        assert value is not None, name
        torch.testing.assert_close(value.detach(), ref[name], rtol=1e-9, atol=1e-10, msg=name)


def test_opcheck(compiled, generator: torch.Generator) -> None:  # type: ignore[no-untyped-def]
    layer, inputs, states = op_inputs(compiled("gla"), torch.float32, generator)
    path = str(layer.path)
    grad_inputs = [t.clone().requires_grad_(True) for t in inputs]
    torch.library.opcheck(torch.ops.fwp.forward_train.default, (path, grad_inputs))
    outputs = torch.ops.fwp.forward_train(path, inputs)
    grads = [torch.randn(t.shape, generator=generator) for t in outputs[: 1 + states]]
    torch.library.opcheck(torch.ops.fwp.backward.default, (path, inputs, outputs[1:], grads))
    torch.library.opcheck(torch.ops.fwp.backward.default,
                          (path, inputs, outputs[1:], [grads[0]] + [None] * states))


def test_backward_refuses_a_wrong_checkpoint(compiled,  # type: ignore[no-untyped-def]
                                             generator: torch.Generator) -> None:
    layer, inputs, states = op_inputs(compiled("retnet"), torch.float32, generator)
    path = str(layer.path)
    outputs = torch.ops.fwp.forward_train(path, inputs)
    saved = list(outputs[1:])
    state_name = fwp.signature(path).states[0].name
    saved[states + states] = saved[states + states][:, :1].contiguous()  # checkpoint 1, one head
    with pytest.raises(RuntimeError, match=rf"checkpoint\.1\.{state_name}' has shape"):
        torch.ops.fwp.backward(path, inputs, saved, [outputs[0]] + [None] * states)
    with pytest.raises(RuntimeError, match=r"takes \d+ saved tensors"):
        torch.ops.fwp.backward(path, inputs, saved[:-1], [outputs[0]] + [None] * states)
