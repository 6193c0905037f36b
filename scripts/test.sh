#!/usr/bin/env bash
# The test suite: set up .venv, lint, then pytest. Tests that need the team's shared data read it from
# PIPELINE_SHARED_DIR (default: ../shared when it exists) and are skipped without it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
if [ -z "${PIPELINE_SHARED_DIR:-}" ] && [ -d ../shared ]; then
  PIPELINE_SHARED_DIR="$(cd ../shared && pwd)"; export PIPELINE_SHARED_DIR
fi
.venv/bin/ruff check pipeline tests bench
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
