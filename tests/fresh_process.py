"""A saved model's predictions from a fresh interpreter: what a reload gives where nothing of the fitting
process is left (no cached modules, no registered classes but those the package registers itself)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.schema import SentenceText

ROOT = Path(__file__).resolve().parents[1]

LOAD_AND_PREDICT = """
import json, sys
import numpy as np
from pipeline.models import load_model
from pipeline.schema import SentenceText
model = load_model(sys.argv[1])
inputs = [SentenceText(**row) for row in json.loads(open(sys.argv[2], encoding="utf-8").read())]
p = model.predict_proba(inputs)
np.savez(sys.argv[3], strategy=p.strategy, commitment=p.commitment, thresholds=p.strategy_thresholds)
"""


def predict_in_fresh_process(folder: Path, inputs: Sequence[SentenceText], work: Path) -> dict[str, np.ndarray]:
    """`load_model(folder).predict_proba(inputs)` run by a new interpreter: strategy, commitment, thresholds."""
    rows = [{"text": s.text, "previous": s.previous, "next": s.next} for s in inputs]
    (work / "inputs.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-c", LOAD_AND_PREDICT, str(folder), str(work / "inputs.json"), str(work / "fresh.npz")],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(work / "fresh.npz") as fresh:
        return {name: fresh[name] for name in ("strategy", "commitment", "thresholds")}
