"""Where the package finds what scripts/build.sh built."""

from __future__ import annotations

import os
from pathlib import Path

#: The repository this package lives in (python/fwp/ -> the repo root).
REPO_ROOT = Path(__file__).resolve().parents[2]


def build_dir() -> Path:
    """The build folder: ``$FWP_BUILD_DIR``, else ``<repo>/build``."""
    return Path(os.environ.get("FWP_BUILD_DIR", REPO_ROOT / "build"))


def library_path() -> Path:
    """The operator library: ``$FWP_TORCH_LIBRARY``, else ``<build>/lib/libfwp_torch.so``."""
    override = os.environ.get("FWP_TORCH_LIBRARY")
    return Path(override) if override else build_dir() / "lib" / "libfwp_torch.so"


def compiler_path() -> Path:
    """``fwp-compile``: ``$FWP_COMPILE``, else ``<build>/bin/fwp-compile``."""
    override = os.environ.get("FWP_COMPILE")
    return Path(override) if override else build_dir() / "bin" / "fwp-compile"
