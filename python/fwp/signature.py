"""The contract of a compiled layer, read from its manifest."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from . import _ops
from .errors import FwpError


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor of a layer; ``shape`` is per (batch, head, step), e.g. ``(16,)``."""

    name: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Signature:
    """What a ``.fwpk`` computes (docs/python.md).

    Attributes:
        path: the artifact's absolute path.
        layer: the layer's name, e.g. ``"delta_net"``.
        dtype: ``"float32"`` or ``"float64"``, what the kernels compute in.
        dims: the named sizes it was compiled for, e.g. ``{"d": 16}``.
        seq: per-step inputs, passed as ``[B, H, T, *shape]``.
        params: per-head slow weights, ``[H, *shape]`` (``fwp.Layer``'s parameters).
        states: recurrent states, ``[B, H, *shape]`` (initial values optional, zero otherwise).
        output: the output ``y``, ``[B, H, T, *shape]``.
        tape: what the training forward records for the backward.
        cuda: whether the artifact carries CUDA kernels.
        param_inits: the initial values the layer's IR asks for, by param name
            (``fwp.param_init``: ``"zeros"``, ``"ones"``, ``"constant:V"``,
            ``"linspace:A:B"`` over the heads); other params take fwp-train's defaults.
        backward: per state, how the backward recovers past states (``"invert"``,
            ``"store"`` or ``"checkpoint"``; docs/design.md).
        checkpoint_every: for a checkpointed layer, the steps per segment: its training
            forward keeps the states at every segment's start instead of the tape, and its
            backward recomputes one segment at a time; 0 otherwise.
    """

    path: str
    layer: str
    dtype: str
    dims: dict[str, int]
    seq: tuple[TensorSpec, ...]
    params: tuple[TensorSpec, ...]
    states: tuple[TensorSpec, ...]
    output: TensorSpec
    tape: tuple[TensorSpec, ...]
    cuda: bool
    param_inits: dict[str, str] = field(default_factory=dict)
    backward: dict[str, str] = field(default_factory=dict)
    checkpoint_every: int = 0


def _specs(entries: list[dict[str, Any]]) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(e["name"], tuple(e["shape"])) for e in entries)


def artifact_path(path: str | os.PathLike[str]) -> str:
    """The absolute path of an existing artifact (FwpError naming it otherwise)."""
    resolved = os.path.realpath(os.fspath(path))
    if not os.path.isfile(resolved):
        raise FwpError(f"{os.fspath(path)}: no such artifact file")
    return resolved


def signature(path: str | os.PathLike[str]) -> Signature:
    """The manifest of the ``.fwpk`` at ``path`` as a :class:`Signature`.

    Raises:
        FwpError: the file does not exist.
        RuntimeError: the runtime rejected the artifact; the message names the file and the
            manifest field at fault.
    """
    m = _ops.manifest(artifact_path(path))
    return Signature(
        path=m["path"],
        layer=m["layer"],
        dtype=m["dtype"],
        dims=dict(m["dims"]),
        seq=_specs(m["seq"]),
        params=_specs(m["params"]),
        states=_specs(m["states"]),
        output=TensorSpec(m["output"]["name"], tuple(m["output"]["shape"])),
        tape=_specs(m["tape"]),
        cuda=bool(m["cuda"]),
        param_inits=dict(m.get("param_inits", {})),
        backward=dict(m.get("backward", {})),
        checkpoint_every=int(m.get("checkpoint_every", 0)),
    )
