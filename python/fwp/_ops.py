"""Loads the ``torch.ops.fwp`` operator library and registers its autograd formula.

The library (``runtime/torch``, built by scripts/build.sh) registers the operators
``fwp::manifest``, ``fwp::forward``, ``fwp::forward_train`` and ``fwp::backward``
with CPU, CUDA and Meta kernels (docs/python.md). This module adds the autograd
formula: the gradient of ``forward_train`` is ``backward``.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Sequence

import torch

from ._paths import library_path
from .errors import FwpError

_lock = threading.Lock()
_loaded = False
_manifests: dict[str, dict[str, Any]] = {}


def ensure_loaded() -> None:
    """Loads the operator library once per process; FwpError when it is not built."""
    global _loaded
    with _lock:
        if _loaded:
            return
        path = library_path()
        if not path.is_file():
            raise FwpError(
                f"the fwp operator library {path} does not exist: build it with "
                "scripts/build.sh (or point $FWP_TORCH_LIBRARY / $FWP_BUILD_DIR at a build)"
            )
        try:
            torch.ops.load_library(str(path))
        except OSError as error:
            raise FwpError(f"cannot load the fwp operator library {path}: {error}") from error
        torch.library.register_autograd(
            "fwp::forward_train", _backward, setup_context=_setup_context
        )
        _loaded = True


def manifest(path: str) -> dict[str, Any]:
    """The contract of the artifact at ``path`` (an absolute path), cached per process."""
    ensure_loaded()
    cached = _manifests.get(path)
    if cached is None:
        cached = json.loads(torch.ops.fwp.manifest(path))
        _manifests[path] = cached
    return cached


def initial_param(init: str, heads: int, shape: Sequence[int]) -> torch.Tensor:
    """A param's initial value ``[heads, *shape]`` as its layer's IR asks for it
    (``fwp.param_init``), computed by the runtime (the rule fwp-train applies)."""
    ensure_loaded()
    return torch.ops.fwp.initial_param(init, heads, list(shape))


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: Sequence[torch.Tensor]) -> None:
    path, tensors = inputs
    ctx.path = path
    ctx.num_inputs = len(tensors)
    ctx.num_grads = 1 + len(manifest(path)["states"])  # y and the final states
    # The backward reads the inputs, the final states and the tape; the tape has
    # no gradient, and gradients left undefined count as zero (no zero tensors made).
    ctx.save_for_backward(*tensors, *output[1:])
    ctx.mark_non_differentiable(*output[ctx.num_grads :])
    ctx.set_materialize_grads(False)


def _backward(ctx: Any, grads: Sequence[torch.Tensor | None]) -> tuple[None, list[torch.Tensor]]:
    saved = ctx.saved_tensors
    inputs = list(saved[: ctx.num_inputs])
    forward_results = list(saved[ctx.num_inputs :])
    output_grads = list(grads[: ctx.num_grads])
    return None, torch.ops.fwp.backward(ctx.path, inputs, forward_results, output_grads)
