"""fwp from PyTorch: compiled fast weight programmer layers (``.fwpk``) as modules.

>>> import fwp
>>> layer = fwp.load("build/artifacts/delta_net.fwpk")      # doctest: +SKIP
>>> y, final = layer(q=q, k=k, v=v, beta=beta)                # doctest: +SKIP

See docs/python.md.
"""

from __future__ import annotations

from .compiler import compile
from .errors import FwpError
from .layer import Layer, load
from .signature import Signature, TensorSpec, signature

__all__ = ["FwpError", "Layer", "Signature", "TensorSpec", "compile", "load", "signature"]
