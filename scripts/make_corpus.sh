#!/usr/bin/env bash
# Builds a small real-English corpus in the WikiText-103 layout from Jane
# Austen's six novels as Debian's r-cran-janeaustenr package ships them
# (public-domain texts; the package is MIT-licensed). Idempotent: the .deb is
# fetched once into data/.debs (without installing R), the text files are
# rewritten only when their content would change.
#
#   scripts/make_corpus.sh [OUT_DIR]      # default: data/austen
#
# See docs/language-modelling.md for the conversion rules.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/data/austen}"
pkg=r-cran-janeaustenr
rdb_installed=/usr/lib/R/site-library/janeaustenr/data/Rdata.rdb

if [ -f "$rdb_installed" ]; then
  rdb="$rdb_installed"
else
  debs="$root/data/.debs"
  mkdir -p "$debs"
  deb="$(ls "$debs"/${pkg}_*.deb 2>/dev/null | head -n 1 || true)"
  if [ -z "$deb" ]; then
    echo "[corpus] apt-get download $pkg"
    if ! (cd "$debs" && apt-get download "$pkg" >/dev/null 2>&1); then
      sudo_cmd=""
      [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
      $sudo_cmd apt-get update -qq
      (cd "$debs" && apt-get download "$pkg")
    fi
    deb="$(ls "$debs"/${pkg}_*.deb | head -n 1)"
  fi
  extract="$debs/${pkg}"
  rdb="$extract/usr/lib/R/site-library/janeaustenr/data/Rdata.rdb"
  if [ ! -f "$rdb" ]; then
    rm -rf "$extract"
    dpkg-deb -x "$deb" "$extract"
  fi
fi

# Write into a scratch folder, then move only files whose content changed, so
# the token cache (keyed by content) stays valid across re-runs.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
python3 "$root/scripts/make_corpus.py" "$rdb" "$scratch"
mkdir -p "$out"
for split in train valid test; do
  f="wiki.$split.tokens"
  if ! cmp -s "$scratch/$f" "$out/$f"; then
    cp "$scratch/$f" "$out/$f.tmp.$$"
    mv "$out/$f.tmp.$$" "$out/$f"
  fi
done
echo "[corpus] $out ready"
