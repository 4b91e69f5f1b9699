"""Accuracy of a compiled decaying layer's gradients against an f64 eager reference.

Measures what docs/design.md ("The backward of a decaying fast weight") reports: the relative
error (norm of the difference over norm of the reference) of every gradient of gla, retnet or
gated_delta_net, compiled to f32, at decay logits centred on -6, 0 and 3 (decays
sigmoid(-6) = 0.0025 to sigmoid(3) = 0.95). A measurement, not a test: it prints one line per
artifact and shift.

    python3 bench/decay_gradient_accuracy.py gla build/bench/kernel-artifacts/gla_d32.fwpk
"""

from __future__ import annotations

import sys

import torch

import fwp


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: torch.Tensor,
              w0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """W_t = diag(a_t) W_{t-1} + k_t v_t^T, y_t = W_t^T q_t, step by step."""
    w, ys = w0, []
    for t in range(q.shape[2]):
        w = a[:, :, t, :, None] * w + k[:, :, t, :, None] * v[:, :, t, None, :]
        ys.append(torch.einsum("bhe,bhem->bhm", q[:, :, t], w))
    return torch.stack(ys, 2), w


def reference_gated_delta(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: torch.Tensor,
                          b: torch.Tensor, w0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MODELS.md's gated_delta_net: W' = a_t W_{t-1}, u = W'^T l2n(k_t),
    W_t = W' + l2n(k_t) (x) b_t (v_t - u), y_t = W_t^T l2n(q_t) / sqrt(d)."""
    def l2n(x: torch.Tensor) -> torch.Tensor:
        return x / torch.sqrt((x * x).sum(-1, keepdim=True) + 1e-6)
    w, ys, d = w0, [], q.shape[-1]
    for t in range(q.shape[2]):
        kt, qt = l2n(k[:, :, t]), l2n(q[:, :, t]) / d ** 0.5
        w = a[:, :, t, :, None] * w
        u = torch.einsum("bhe,bhem->bhm", kt, w)
        w = w + kt[..., None] * (b[:, :, t, :] * (v[:, :, t] - u))[:, :, None, :]
        ys.append(torch.einsum("bhe,bhem->bhm", qt, w))
    return torch.stack(ys, 2), w


def errors(path: str, layer: str, shift: float, batch: int = 2, heads: int = 2,
           steps: int = 300) -> dict[str, float]:
    torch.manual_seed(1)
    compiled = fwp.load(path, heads=heads)
    d = compiled.signature.dims["d"]
    q, k, v = (torch.randn(batch, heads, steps, d) for _ in range(3))
    w0 = 0.3 * torch.randn(batch, heads, d, d)
    inputs = {"q": q, "k": k, "v": v}
    if layer == "gla":
        inputs["g"] = 0.5 * torch.randn(batch, heads, steps, d) + shift
    elif layer == "gated_delta_net":
        inputs["beta"] = torch.randn(batch, heads, steps, 1)
        inputs["alpha"] = 0.5 * torch.randn(batch, heads, steps, 1) + shift
    else:
        with torch.no_grad():
            compiled.decay.copy_(0.5 * torch.randn(heads, 1) + shift)
    leaves = {name: t.clone().requires_grad_() for name, t in inputs.items()}
    leaves["W0"] = w0.clone().requires_grad_()
    y, final = compiled(state={"W": leaves["W0"]},
                        **{n: t for n, t in leaves.items() if n != "W0"})
    cy = torch.randn(y.shape, dtype=torch.float64)
    cw = torch.randn(final["W"].shape, dtype=torch.float64)
    targets = list(leaves.values()) + ([compiled.decay] if layer == "retnet" else [])
    got = torch.autograd.grad((y.double() * cy).sum() + (final["W"].double() * cw).sum(),
                              targets)

    ref = {name: t.detach().double().requires_grad_() for name, t in leaves.items()}
    if layer == "gla":
        a = torch.sigmoid(ref["g"])
    elif layer == "gated_delta_net":
        a = torch.sigmoid(ref["alpha"])
    else:
        ref["decay"] = compiled.decay.detach().double().requires_grad_()
        a = torch.sigmoid(ref["decay"].view(heads))[None, :, None, None].expand(
            batch, heads, steps, d)
    if layer == "gated_delta_net":
        ry, rw = reference_gated_delta(ref["q"], ref["k"], ref["v"], a, torch.sigmoid(ref["beta"]),
                                       ref["W0"])
    else:
        ry, rw = reference(ref["q"], ref["k"], ref["v"], a, ref["W0"])
    want = torch.autograd.grad((ry * cy).sum() + (rw * cw).sum(), list(ref.values()))
    return {name: ((g.double() - w).norm() / w.norm()).item()
            for name, g, w in zip(ref, got, want)}


def main() -> None:
    if len(sys.argv) < 3 or sys.argv[1] not in ("gla", "retnet", "gated_delta_net"):
        sys.exit("usage: decay_gradient_accuracy.py gla|retnet|gated_delta_net ARTIFACT.fwpk...")
    for path in sys.argv[2:]:
        for shift in (-6.0, 0.0, 3.0):
            measured = errors(path, sys.argv[1], shift)
            print(path, f"decay logits ~ {shift:+.0f}:",
                  ", ".join(f"{n} {e:.1e}" for n, e in measured.items()))


if __name__ == "__main__":
    main()
