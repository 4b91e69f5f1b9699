"""The torch.ops.fwp operators: opcheck (schemas, fake/Meta kernels, autograd
registration, AOT dispatch) for every op, and torch.compile(fullgraph=True)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fwp
from conftest import HEADS, artifact, random_inputs, randomise_params

# One layer without params and states of one kind, one with params and two states.
OPCHECK_MODELS = ["delta_net", "rdn"]


def op_inputs(model: str, generator: torch.Generator, with_state: bool
              ) -> tuple[str, list[torch.Tensor]]:
    layer = fwp.load(artifact(model), heads=HEADS)
    randomise_params(layer, generator)
    seq, state = random_inputs(layer, batch=2, steps=4, dtype=torch.float32, generator=generator)
    inputs = [*seq.values(), *(p.detach() for p in layer.parameters())]
    if with_state:
        inputs += list(state.values())
    return layer.path, inputs


@pytest.mark.parametrize("with_state", [False, True], ids=["zero_state", "init_state"])
@pytest.mark.parametrize("model", OPCHECK_MODELS)
def test_opcheck(model: str, with_state: bool, generator: torch.Generator) -> None:
    path, inputs = op_inputs(model, generator, with_state)
    torch.library.opcheck(torch.ops.fwp.forward.default, (path, inputs))
    grad_inputs = [t.clone().requires_grad_(True) for t in inputs]
    torch.library.opcheck(torch.ops.fwp.forward_train.default, (path, grad_inputs))
    outputs = torch.ops.fwp.forward_train(path, inputs)
    states = len(fwp.signature(path).states)
    grads = [torch.randn(t.shape, generator=generator) for t in outputs[: 1 + states]]
    torch.library.opcheck(torch.ops.fwp.backward.default,
                          (path, inputs, outputs[1:], grads))
    # A gradient left out (None) counts as zero.
    grads_none = [grads[0]] + [None] * states
    torch.library.opcheck(torch.ops.fwp.backward.default,
                          (path, inputs, outputs[1:], grads_none))


def test_forward_and_forward_train_agree(generator: torch.Generator) -> None:
    path, inputs = op_inputs("delta_lstm", generator, with_state=True)
    plain = torch.ops.fwp.forward(path, inputs)
    train = torch.ops.fwp.forward_train(path, inputs)
    assert len(train) == len(plain) + len(fwp.signature(path).tape)
    for a, b in zip(plain, train):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


class TinyModel(nn.Module):
    """A projection into the layer's seq inputs, an fwp layer, a readout."""

    def __init__(self, layer: fwp.Layer, width: int) -> None:
        super().__init__()
        self.layer = layer
        sig = layer.signature
        self.sizes = [s.shape[0] for s in sig.seq]
        self.heads = layer.heads or HEADS
        self.proj = nn.Linear(width, self.heads * sum(self.sizes))
        self.out = nn.Linear(self.heads * sig.output.shape[0], width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        z = self.proj(x).view(b, t, self.heads, -1).transpose(1, 2)
        parts = torch.split(z, self.sizes, dim=-1)
        seq = {s.name: p.contiguous() for s, p in zip(self.layer.signature.seq, parts)}
        y, _ = self.layer(**seq)
        return self.out(y.transpose(1, 2).reshape(b, t, -1))


def test_torch_compile_fullgraph_matches_eager(generator: torch.Generator) -> None:
    torch.manual_seed(0)
    layer = fwp.load(artifact("rdn"), heads=HEADS)
    model = TinyModel(layer, width=12)
    x = torch.randn(2, 6, 12, generator=generator)

    def step(m: nn.Module) -> tuple[torch.Tensor, list[torch.Tensor]]:
        m.zero_grad()
        loss = m(x).square().mean()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in m.parameters()]

    eager_loss, eager_grads = step(model)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    compiled_loss, compiled_grads = step(compiled)
    torch.testing.assert_close(compiled_loss, eager_loss)
    for a, b in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(a, b)
    assert any(g.abs().sum() > 0 for g in compiled_grads[:len(list(layer.parameters()))])
