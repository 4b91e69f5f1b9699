#!/usr/bin/env bash
# Installs everything fwp needs on a fresh Debian 12 machine, idempotently:
#   - LLVM/MLIR 22 (compiler side), ninja, ccache, GoogleTest, TOML/CLI/JSON headers (apt-get)
#   - LibTorch from the PyPI torch wheel, in a project-local virtualenv (.venv)
#   - the fwp Python package (python/, editable) and pytest, in that venv
# Re-running it is cheap: apt-get and pip skip what is already there.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
torch_version="2.11.0"

apt_packages=(
  libmlir-22-dev mlir-22-tools llvm-22-dev llvm-22-tools
  ninja-build ccache cmake g++ python3-venv
  libgtest-dev libgmock-dev
  libtomlplusplus-dev libcli11-dev nlohmann-json3-dev
  libgloo-dev
)

missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "[setup] apt-get install ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "[setup] apt packages present"
fi

venv="$root/.venv"
if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating $venv"
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$torch_version' else 1)" 2>/dev/null; then
  echo "[setup] pip install torch==$torch_version (large download, once)"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q "torch==$torch_version" numpy
else
  echo "[setup] torch $torch_version present"
fi
# fwp-plot (tools/fwp-plot) draws with matplotlib; its tests run under pytest.
plot_packages=(matplotlib==3.11.2 pytest==9.2.0)
if ! "$venv/bin/python" -c "import matplotlib, pytest" 2>/dev/null; then
  echo "[setup] pip install ${plot_packages[*]}"
  "$venv/bin/python" -m pip install -q "${plot_packages[@]}"
else
  echo "[setup] matplotlib, pytest present"
fi
# The fwp Python package (python/, installed editable: it loads the operator
# library that scripts/build.sh builds into build/lib) and pytest for its tests
# (docs/python.md); pytest comes with fwp-plot's packages above.
if ! "$venv/bin/python" -c "import sys, fwp; sys.exit(0 if fwp.__file__.startswith('$root/python/') else 1)" 2>/dev/null; then
  echo "[setup] pip install -e python/ (the fwp package)"
  if ! "$venv/bin/python" -m pip install -q --no-deps -e "$root/python"; then
    # pip's isolated build needs setuptools from the index; without one, put
    # python/ on the venv's path directly (the same as an editable install).
    site="$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")"
    echo "[setup] pip could not install python/; adding it to $site/fwp-local.pth"
    echo "$root/python" > "$site/fwp-local.pth"
  fi
else
  echo "[setup] fwp package present"
fi
# The Arcade Learning Environment (C++ library + ROMs from the ale-py sdist on
# PyPI) for the Atari task; cached in .deps/ale, a no-op once built.
bash "$root/scripts/setup_ale.sh"
echo "[setup] done"
