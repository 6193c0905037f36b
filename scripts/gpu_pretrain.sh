#!/usr/bin/env bash
# Prepared run for a lent GPU machine (at most 10 minutes): pretrain a 6x512 Swedish BERT from scratch with
# `pipeline pretrain --config configs/gpu-pretrain.yaml`, then put weights, tokenizer, held-out perplexity and
# the log under $OUT. Not run yet (no GPU in the session that wrote it); nothing in the project depends on it.
#   OUT                  folder whose contents come back (set by the device runner)
#   PIPELINE_SHARED_DIR  folder with corpus/regeringen.jsonl.gz (default: ./shared, then ../shared)
#   PYTHON               interpreter with the project installed (default: .venv/bin/python, then python)
#   GPU_PRETRAIN_SET     extra `--set key=value` overrides, separated by spaces (tests/test_production_paths.py
#                        shrinks the run with it to a seconds-long CPU run on a constructed corpus)
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to a folder for the results}"
if [ -z "${PIPELINE_SHARED_DIR:-}" ]; then
  for candidate in shared ../shared; do
    if [ -f "$candidate/corpus/regeringen.jsonl.gz" ]; then PIPELINE_SHARED_DIR="$(cd "$candidate" && pwd)"; break; fi
  done
fi
: "${PIPELINE_SHARED_DIR:?no corpus found: set PIPELINE_SHARED_DIR}"
export PIPELINE_SHARED_DIR
PY="${PYTHON:-}"
if [ -z "$PY" ]; then if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python; fi; fi

mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || echo "no nvidia-smi: running on CPU would take far longer" >&2
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())' | tee "$OUT/env.txt"

export GPU_PRETRAIN_OUT="$OUT/backbone" GPU_PRETRAIN_MLFLOW_DIR="$OUT"
overrides=()
read -r -a extra <<< "${GPU_PRETRAIN_SET:-}"
for item in "${extra[@]}"; do overrides+=(--set "$item"); done
# 9 minutes hard stop: the config's own budget is 8 minutes of training plus tokenizer and held-out scoring.
timeout 540 "$PY" -m pipeline pretrain --config configs/gpu-pretrain.yaml "${overrides[@]}" 2>&1 | tee "$OUT/pretrain.log"

rm -rf "$OUT/backbone/checkpoints"  # optimizer state: large, and only needed to resume on that machine
cat "$OUT/backbone/pretrain.json"
