"""``fwp.Layer``: a compiled fast-weight layer as a ``torch.nn.Module``."""

from __future__ import annotations

import math
import os
from typing import Mapping

import torch
from torch import nn

from . import _ops
from .errors import FwpError
from .signature import Signature, artifact_path, signature

# What an f32 artifact also takes: the inputs are cast to f32 for the kernels.
_NARROW = (torch.bfloat16, torch.float16)
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _init_param(name: str, shape: tuple[int, ...], heads: int) -> torch.Tensor:
    """fwp-train's default initialisation (runtime/train/src/Model.cpp): LayerNorm
    gains 1, matrices randn / sqrt(rows), vectors and biases 0. A param whose layer
    asks for another initial value (``fwp.param_init``) takes that instead."""
    full = (heads, *shape)
    if name.startswith("ln_weight"):
        return torch.ones(full)
    if len(shape) >= 2:
        return torch.randn(full) / math.sqrt(shape[0])
    return torch.zeros(full)


class Layer(nn.Module):
    """A layer compiled by ``fwp-compile``, run by the ``torch.ops.fwp`` operators.

    ``forward`` takes the seq inputs by their manifest names as ``[B, H, T, *shape]``
    tensors (CPU or CUDA; float32, bfloat16 or float16 for an f32 artifact, float64 for
    an f64 one) and optionally initial states, and returns ``(y, final_states)``.
    The layer's per-head params are ``nn.Parameter`` s of shape ``[heads, *shape]``,
    initialised as fwp-train does.
    """

    def __init__(self, path: str | os.PathLike[str], heads: int | None = None) -> None:
        """Loads the artifact at ``path``; ``heads`` sizes the params (required when the
        layer has params)."""
        super().__init__()
        self._path = artifact_path(path)
        self.signature: Signature = signature(self._path)
        self._dtype = _DTYPES[self.signature.dtype]
        if self.signature.params and heads is None:
            names = ", ".join(p.name for p in self.signature.params)
            raise FwpError(
                f"{self._path}: {self.signature.layer} has per-head params ({names}); "
                "pass heads= to fwp.load"
            )
        if heads is not None and heads <= 0:
            raise FwpError(f"{self._path}: heads must be positive, got {heads}")
        self.heads = heads
        with torch.no_grad():
            for spec in self.signature.params:
                rule = self.signature.param_inits.get(spec.name)
                init = (_ops.initial_param(rule, heads or 1, spec.shape) if rule is not None
                        else _init_param(spec.name, spec.shape, heads or 1)).to(self._dtype)
                self.register_parameter(spec.name, nn.Parameter(init))

    @property
    def path(self) -> str:
        """The artifact's absolute path (how the operators name it)."""
        return self._path

    def extra_repr(self) -> str:
        sig = self.signature
        seq = ", ".join(f"{s.name}{list(s.shape)}" for s in sig.seq)
        states = ", ".join(f"{s.name}{list(s.shape)}" for s in sig.states)
        return (
            f"{sig.layer}, path={self._path!r}, dtype={sig.dtype}, dims={sig.dims}, "
            f"heads={self.heads}, seq=({seq}), states=({states}), cuda={sig.cuda}"
        )

    def forward(
        self, state: Mapping[str, torch.Tensor] | None = None, **seq: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Runs the layer over the sequence.

        Args:
            state: initial states by name (``[B, H, *shape]``); missing ones start at zero.
            **seq: every seq input by name, ``[B, H, T, *shape]`` (contiguous).

        Returns:
            ``y`` ``[B, H, T, *shape]`` in the seq inputs' dtype, and the final states by
            name in the artifact's dtype (feed them back as ``state=`` to carry on).

        Raises:
            FwpError: wrong or missing names, mixed or unsupported dtypes, non-contiguous
                tensors.
            RuntimeError: the runtime rejected a shape, dtype or device (its message names
                the tensor).
        """
        sig = self.signature
        seq_names = [s.name for s in sig.seq]
        state_names = [s.name for s in sig.states]
        missing = [n for n in seq_names if n not in seq]
        unknown = [n for n in seq if n not in seq_names]
        if missing or unknown:
            raise FwpError(
                f"{sig.layer}: forward takes the seq inputs {seq_names}"
                + (f"; missing {missing}" if missing else "")
                + (f"; unexpected {unknown}" if unknown else "")
                + (" (initial states go in state=)" if set(unknown) & set(state_names) else "")
            )
        state = dict(state or {})
        unknown = [n for n in state if n not in state_names]
        if unknown:
            raise FwpError(f"{sig.layer}: unknown states {unknown} (the states are {state_names})")

        out_dtype = seq[seq_names[0]].dtype
        for name in seq_names:
            if seq[name].dtype != out_dtype:
                raise FwpError(
                    f"{sig.layer}: seq input '{name}' has dtype {seq[name].dtype} but "
                    f"'{seq_names[0]}' has {out_dtype}; all seq inputs must share one dtype"
                )
        self._check_dtype(f"seq input '{seq_names[0]}'", out_dtype)

        named = {f"seq input '{n}'": seq[n] for n in seq_names}
        named.update({f"state '{n}'": t for n, t in state.items()})
        for name, tensor in named.items():
            if not isinstance(tensor, torch.Tensor):
                raise FwpError(f"{sig.layer}: {name} is a {type(tensor).__name__}, not a tensor")
            if not tensor.is_contiguous():
                raise FwpError(
                    f"{sig.layer}: {name} is not contiguous (shape {list(tensor.shape)}, "
                    f"strides {list(tensor.stride())}); call .contiguous() on it"
                )

        inputs = [self._cast(seq[n]) for n in seq_names]
        inputs += [self._cast(getattr(self, p.name)) for p in sig.params]
        if state:
            leader = inputs[0]
            batch, heads = leader.shape[0], leader.shape[1]
            for spec in sig.states:
                given = state.get(spec.name)
                if given is None:
                    given = leader.new_zeros((batch, heads, *spec.shape))
                else:
                    self._check_dtype(f"state '{spec.name}'", given.dtype)
                inputs.append(self._cast(given))

        if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
            outputs = torch.ops.fwp.forward_train(self._path, inputs)
        else:
            outputs = torch.ops.fwp.forward(self._path, inputs)
        y = outputs[0]
        if y.dtype != out_dtype:
            y = y.to(out_dtype)
        finals = {spec.name: outputs[1 + i] for i, spec in enumerate(sig.states)}
        return y, finals

    def _check_dtype(self, name: str, dtype: torch.dtype) -> None:
        if dtype == self._dtype or (self._dtype == torch.float32 and dtype in _NARROW):
            return
        allowed = "float32, bfloat16 or float16" if self._dtype == torch.float32 else "float64"
        raise FwpError(
            f"{self.signature.layer}: {name} has dtype {dtype}; this artifact computes in "
            f"{self.signature.dtype} and takes {allowed} tensors"
        )

    def _cast(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor if tensor.dtype == self._dtype else tensor.to(self._dtype)


def load(path: str | os.PathLike[str], heads: int | None = None) -> Layer:
    """Loads the ``.fwpk`` at ``path`` as an :class:`Layer` (see there).

    Raises:
        FwpError: the file is missing, or ``heads`` is needed and missing.
        RuntimeError: the runtime rejected the artifact (corrupt, truncated, foreign); the
            message names the file and the manifest field at fault.
    """
    _ops.ensure_loaded()
    return Layer(path, heads=heads)
