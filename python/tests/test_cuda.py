"""CUDA tensors: the compiled CUDA kernels against the CPU kernels (themselves checked
against the reference layers in test_reference.py). Skipped without a GPU."""

from __future__ import annotations

import pytest
import torch

import fwp
from conftest import HEADS, MODELS, artifact, random_inputs, randomise_params

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible")


@pytest.mark.parametrize("model", MODELS)
def test_cuda_matches_cpu(model: str, generator: torch.Generator) -> None:
    layer = fwp.load(artifact(model), heads=HEADS)
    assert layer.signature.cuda
    randomise_params(layer, generator)
    seq, state = random_inputs(layer, 2, 9, torch.float32, generator)

    def run(device: str) -> list[torch.Tensor]:
        layer.to(device)
        layer.zero_grad()
        leaves = {n: t.to(device).requires_grad_(True) for n, t in {**seq, **state}.items()}
        y, finals = layer(state={n: leaves[n] for n in state}, **{n: leaves[n] for n in seq})
        (y.square().sum() + sum(f.square().sum() for f in finals.values())).backward()
        out = [y, *finals.values(), *(t.grad for t in leaves.values()),
               *(p.grad for p in layer.parameters())]
        return [t.detach().cpu() for t in out]

    for a, b in zip(run("cuda"), run("cpu")):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_cuda_bfloat16_and_compile(generator: torch.Generator) -> None:
    layer = fwp.load(artifact("delta_net")).cuda()
    seq, _ = random_inputs(layer, 2, 5, torch.float32, generator, device="cuda")
    y32, _ = layer(**seq)
    y16, _ = layer(**{n: t.bfloat16() for n, t in seq.items()})
    assert y16.dtype == torch.bfloat16 and y16.is_cuda
    torch.testing.assert_close(y16.float(), y32, rtol=0.05, atol=0.05)
    compiled = torch.compile(lambda **s: layer(**s)[0], fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(**seq), y32)
