#!/usr/bin/env bash
# Set up (once) and check lint and types: ruff over the sources and tests, mypy over the library and both applications.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
status=0
.venv/bin/ruff check spnkit apps benchmarks tests || status=1
.venv/bin/mypy || status=1
exit "$status"
