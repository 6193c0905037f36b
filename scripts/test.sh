#!/usr/bin/env bash
# The test suite: set up .venv, lint, then pytest, quick tier first and the marked tiers (slow, server, spark) after. Tests that need the team's shared data read it from
# PIPELINE_SHARED_DIR (default: ../shared when it exists) and are skipped without it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
if [ -z "${PIPELINE_SHARED_DIR:-}" ] && [ -d ../shared ]; then
  PIPELINE_SHARED_DIR="$(cd ../shared && pwd)"; export PIPELINE_SHARED_DIR
fi
.venv/bin/ruff check pipeline tests bench
# The quick tier (pyproject's default: nothing marked), then the marked tiers (see [tool.pytest.ini_options]).
# Exit status 5 (no test collected: arguments that select none of a tier's tests) is not a failure.
tier() { .venv/bin/python -m pytest -q -p no:cacheprovider "$@" || { s=$?; [ "$s" -eq 5 ] || exit "$s"; }; }
tier "$@"
tier -m "slow or server or spark" "$@"
