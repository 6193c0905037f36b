#!/usr/bin/env bash
# The quick start: set up .venv, then run every stage on the bundled constructed sample (offline, ~5 min).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m pipeline run --config configs/quickstart.yaml "$@"
