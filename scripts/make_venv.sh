#!/bin/bash
# Creates the virtualenv VENV with a supported Python (3.12, 3.13 or 3.11), however the
# machine is set up:
#
#   scripts/make_venv.sh VENV            (`make setup` calls it; PYTHON=... picks the interpreter)
#
# 1. The interpreter: $PYTHON if set, else the first of Python 3.12, 3.13 and 3.11 found
#    on PATH (pythonX.Y) or installed by pyenv, else python3 if it is one of them.
# 2. `python -m venv`; where that fails because Debian/Ubuntu's pythonX.Y-venv package
#    (ensurepip) is missing, uv makes the venv from the same interpreter instead.
# 3. No supported Python at all (Cloud TPU VM images have Python 3.10): uv installs
#    Python 3.12 in ~/.local/share/uv and makes the venv from it. uv comes from PATH, from
#    ~/.local/bin, or from PyPI through the system's `python3 -m pip install --user`.
# Every step says what it does.
set -euo pipefail

VENV=${1:?usage: scripts/make_venv.sh VENV}
UV_VERSION=0.13.9          # uv from PyPI, when it has to be installed
UV_PYTHON=3.12             # the Python uv installs when the machine has none

supported() {   # whether "$1" runs and is Python 3.11-3.13
  "$1" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))' \
    > /dev/null 2>&1
}

find_python() {
  if [[ -n ${PYTHON:-} ]]; then
    if supported "$PYTHON"; then echo "$PYTHON"; return; fi
    echo "PYTHON=$PYTHON is not a Python 3.11-3.13 this machine can run" >&2
    exit 1
  fi
  local version candidate
  for version in 3.12 3.13 3.11; do
    if supported "python$version"; then command -v "python$version"; return; fi
    if command -v pyenv > /dev/null 2>&1; then   # installed, though not the active one
      for candidate in $(pyenv versions --bare 2>/dev/null | grep -E "^$version(\.|$)" \
                         | sort -V -r); do
        candidate="$(pyenv root)/versions/$candidate/bin/python$version"
        if supported "$candidate"; then echo "$candidate"; return; fi
      done
    fi
  done
  if supported python3; then command -v python3; fi
}

find_uv() {
  if command -v uv > /dev/null 2>&1; then command -v uv; return; fi
  if [[ -x $HOME/.local/bin/uv ]]; then echo "$HOME/.local/bin/uv"; return; fi
  echo "getting uv $UV_VERSION from PyPI: python3 -m pip install --user uv==$UV_VERSION" >&2
  if python3 -m pip install --quiet --user "uv==$UV_VERSION" >&2 && \
     [[ -x $HOME/.local/bin/uv ]]; then
    echo "$HOME/.local/bin/uv"
    return
  fi
  echo "no Python 3.11-3.13 here and uv could not be installed: install uv" \
       "(https://docs.astral.sh/uv/) or a Python 3.12 (Ubuntu: the deadsnakes PPA," \
       "apt-get install python3.12 python3.12-venv), then run this again" >&2
  exit 1
}

python=$(find_python)
if [[ -n $python ]]; then
  echo "Python: $python ($("$python" -V 2>&1))"
  if "$python" -m venv "$VENV" > "$VENV.venv-error" 2>&1; then
    rm -f "$VENV.venv-error"
    exit 0
  fi
  echo "$python -m venv failed ($(tail -n 1 "$VENV.venv-error")): making the venv with uv" >&2
  rm -rf "$VENV" "$VENV.venv-error"
  uv=$(find_uv)
  "$uv" venv --seed --python "$python" "$VENV"
  exit 0
fi
echo "no Python 3.11-3.13 on this machine (python3 is $(python3 -V 2>&1 || echo absent)):" \
     "installing Python $UV_PYTHON with uv"
uv=$(find_uv)
"$uv" python install "$UV_PYTHON"
"$uv" venv --seed --python "$UV_PYTHON" "$VENV"
