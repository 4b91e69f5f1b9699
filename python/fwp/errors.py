"""The package's exception type."""

from __future__ import annotations


class FwpError(RuntimeError):
    """A bad artifact, a bad call or a missing build, with a message naming the culprit.

    Errors raised by the runtime inside the ``torch.ops.fwp`` operators arrive as
    ``RuntimeError`` carrying the runtime's message (``FwpError`` is a subclass, so
    ``except RuntimeError`` catches both).
    """
