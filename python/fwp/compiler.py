"""``fwp.compile``: runs the project's ``fwp-compile`` on a model."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Mapping

from ._paths import compiler_path
from .errors import FwpError


def compile(  # noqa: A001 - the package's verb, as in fwp-compile
    model_mlir: str | os.PathLike[str],
    dims: Mapping[str, int] | None = None,
    cuda: bool = True,
    out: str | os.PathLike[str] | None = None,
    dtype: str | None = None,
    backward: str | None = None,
) -> Path:
    """Compiles a layer (``models/*.mlir``) into a ``.fwpk`` with ``fwp-compile``.

    Args:
        model_mlir: the layer's ``.mlir`` file.
        dims: named sizes to override, e.g. ``{"d": 32}`` (``--dim d=32``).
        cuda: also embed CUDA kernels where the layer can have them (f32 layers;
            ``--cuda=auto``); ``False`` for CPU kernels only (``--cuda=off``).
        out: the artifact's path; default ``<model name>.fwpk`` in the current folder.
        dtype: ``"f32"`` or ``"f64"`` to compute in another float type than the model's.
        backward: how the backward recovers past fast-weight states (``--backward``):
            ``"invert"``, ``"store"`` or ``"checkpoint"`` / ``"checkpoint:C"``; default: the
            compiler's choice (``invert`` where the writes can be undone, else
            ``checkpoint:64``; docs/design.md, "Backward strategies").

    Returns:
        The artifact's path.

    Raises:
        FwpError: ``fwp-compile`` is not built here (a runtime-only build, e.g. a machine
            without MLIR 22), the model file is missing, or the compiler failed (its
            message included).
    """
    compiler = compiler_path()
    if not compiler.is_file():
        raise FwpError(
            f"fwp-compile is not built ({compiler} does not exist): build the compiler with "
            "scripts/build.sh on a machine with MLIR 22, or set $FWP_COMPILE; on a "
            "runtime-only machine, compile the artifact elsewhere and fwp.load() the .fwpk"
        )
    model = Path(model_mlir)
    if not model.is_file():
        raise FwpError(f"{model}: no such model file")
    target = Path(out) if out is not None else Path.cwd() / f"{model.stem}.fwpk"
    command = [str(compiler), str(model), "-o", str(target), f"--cuda={'auto' if cuda else 'off'}"]
    for name, value in (dims or {}).items():
        command += ["--dim", f"{name}={int(value)}"]
    if dtype is not None:
        command.append(f"--dtype={dtype}")
    if backward is not None:
        command.append(f"--backward={backward}")
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise FwpError(
            f"fwp-compile failed on {model} (exit {result.returncode}):\n{result.stderr.strip()}"
        )
    return target
