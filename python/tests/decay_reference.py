"""Eager PyTorch references of the layers beyond the paper, written from
shared/MODELS.md ("Beyond the paper") and models/delta_product.mlir's comment,
independently of the compiler: the oracle for the layers that `fwp-run --layer`
does not know (a new layer is a .mlir file; its reference lives in the tests).

Shapes: seq [B, H, T, n], params [H, *shape], states [B, H, d, d] key-major
(W[e, m], e a key index), as in the layer contract."""

from __future__ import annotations

from typing import Callable

import torch

Tensor = torch.Tensor


def l2n(x: Tensor) -> Tensor:
    return x / torch.sqrt((x * x).sum(-1, keepdim=True) + 1e-6)


def read(w: Tensor, q: Tensor) -> Tensor:
    """read(W, q)[m] = sum_e W[e, m] q[e]."""
    return torch.einsum("bhem,bhe->bhm", w, q)


def delta(w: Tensor, k: Tensor, v: Tensor, beta: Tensor) -> Tensor:
    """W + k (x) beta (v - read(W, k)); beta [B, H, 1]."""
    return w + k.unsqueeze(-1) * (beta * (v - read(w, k))).unsqueeze(-2)


def outer(k: Tensor, v: Tensor) -> Tensor:
    return k.unsqueeze(-1) * v.unsqueeze(-2)


def gated_delta_net(seq: dict[str, Tensor], params: dict[str, Tensor], w: Tensor
                    ) -> tuple[Tensor, Tensor]:
    d = seq["q"].shape[-1]
    ys = []
    for t in range(seq["q"].shape[2]):
        a = torch.sigmoid(seq["alpha"][:, :, t])
        w = delta(a.unsqueeze(-1) * w, l2n(seq["k"][:, :, t]), seq["v"][:, :, t],
                  torch.sigmoid(seq["beta"][:, :, t]))
        ys.append(read(w, l2n(seq["q"][:, :, t]) / d ** 0.5))
    return torch.stack(ys, 2), w


def retnet(seq: dict[str, Tensor], params: dict[str, Tensor], w: Tensor
           ) -> tuple[Tensor, Tensor]:
    gamma = torch.sigmoid(params["decay"]).reshape(1, -1, 1, 1)
    ys = []
    for t in range(seq["q"].shape[2]):
        w = gamma * w + outer(seq["k"][:, :, t], seq["v"][:, :, t])
        ys.append(read(w, seq["q"][:, :, t]))
    return torch.stack(ys, 2), w


def gla(seq: dict[str, Tensor], params: dict[str, Tensor], w: Tensor
        ) -> tuple[Tensor, Tensor]:
    ys = []
    for t in range(seq["q"].shape[2]):
        a = torch.sigmoid(seq["g"][:, :, t])
        w = a.unsqueeze(-1) * w + outer(seq["k"][:, :, t], seq["v"][:, :, t])
        ys.append(read(w, seq["q"][:, :, t]))
    return torch.stack(ys, 2), w


def delta_product(seq: dict[str, Tensor], params: dict[str, Tensor], w: Tensor
                  ) -> tuple[Tensor, Tensor]:
    ys = []
    for t in range(seq["q"].shape[2]):
        w = delta(w, l2n(seq["k1"][:, :, t]), seq["v1"][:, :, t],
                  torch.sigmoid(seq["beta1"][:, :, t]))
        w = delta(w, l2n(seq["k2"][:, :, t]), seq["v2"][:, :, t],
                  torch.sigmoid(seq["beta2"][:, :, t]))
        ys.append(read(w, l2n(seq["q"][:, :, t])))
    return torch.stack(ys, 2), w


LAYERS: dict[str, Callable[[dict[str, Tensor], dict[str, Tensor], Tensor],
                           tuple[Tensor, Tensor]]] = {
    "gated_delta_net": gated_delta_net,
    "retnet": retnet,
    "gla": gla,
    "delta_product": delta_product,
}


def run(model: str, inputs: dict[str, Tensor], seq_names: list[str], param_names: list[str]
        ) -> dict[str, Tensor]:
    """The fwp-run --layer contract in Python: ``inputs`` holds the seq tensors, the
    params, optionally ``init.W``, ``grad.y`` and ``grad.final.W``; returns ``y``,
    ``final.W`` and ``grad.<name>`` of every seq input, param and given initial state
    (computed in float64 with autograd, returned in the inputs' dtype)."""
    dtype = inputs["grad.y"].dtype
    leaves = {n: t.detach().double().requires_grad_(True) for n, t in inputs.items()
              if not n.startswith("grad.")}
    seq = {n: leaves[n] for n in seq_names}
    params = {n: leaves[n] for n in param_names}
    q = seq["q"]
    d = q.shape[-1]
    w0 = leaves.get("init.W")
    if w0 is None:
        w0 = torch.zeros(q.shape[0], q.shape[1], d, d, dtype=torch.float64)
    y, w = LAYERS[model](seq, params, w0)
    loss = (y * inputs["grad.y"].double()).sum()
    if "grad.final.W" in inputs:
        loss = loss + (w * inputs["grad.final.W"].double()).sum()
    names = list(leaves)
    grads = torch.autograd.grad(loss, [leaves[n] for n in names])
    out = {"y": y.detach().to(dtype), "final.W": w.detach().to(dtype)}
    for name, grad in zip(names, grads):
        out[f"grad.{name}"] = grad.to(dtype)
    return out
