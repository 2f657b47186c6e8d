#!/usr/bin/env bash
# Create .venv with the CPU build of torch and install the library and both applications (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if [ ! -x .venv/bin/supair ] || ! .venv/bin/python -c "import torch, spnkit, supair, spnkit_mnist, mnist, pytest, hypothesis, tqdm, graphviz, mypy, ruff, sklearn" >/dev/null 2>&1; then
  .venv/bin/python -m pip install -q --upgrade pip
  # torch 2.13.0 CPU is on this machine's disk; pinning it avoids a multi-GB CUDA download
  .venv/bin/python -m pip install -q "torch==2.13.0" "numpy<2"
  .venv/bin/python -m pip install -q -e ".[draw,progress,mnist,test,lint,sklearn]" -e apps/supair -e apps/spnkit_mnist
fi
