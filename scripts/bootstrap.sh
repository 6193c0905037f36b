#!/usr/bin/env bash
# Create .venv and install the project with a CPU build of torch. Idempotent: reinstalls only when
# pyproject.toml changed. Needs only Python 3.11 and access to the package registry.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for candidate in python3.11 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PY="$candidate"; break
    fi
  done
fi
[ -n "$PY" ] || { echo "bootstrap: Python 3.11 not found (set PYTHON=/path/to/python3.11)" >&2; exit 1; }

stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ -f "$stamp" ]; then exit 0; fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first and pinned: its CPU build (a few hundred MB) rather than the multi-GB CUDA build
# that an unpinned requirement would pull. On machines where PyPI serves only the CUDA wheel,
# install the CPU wheel of torch 2.13.0 by hand first; this line then installs nothing.
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[dev,bench,spark]"
rm -f .venv/.installed-*
touch "$stamp"
echo "bootstrap: environment ready in .venv"
