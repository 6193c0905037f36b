"""Baselines on the shared gold data: tune TF-IDF on TRAIN only, then score every baseline once on DEV.

    python bench/baselines.py --tune --out runs/bench/baselines

Reads ../shared/gold (or $PIPELINE_SHARED_DIR/gold, or --shared). Tuning uses 5-fold cross-validation on
train with folds grouped by document (and stratified on commitment); dev is touched only for the final
scores. The tuned model's strategy thresholds come from the out-of-fold train predictions, not from dev.
Writes the reports of every model, cv.json (the search) and results.md (tables to paste into docs/results.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.config import EvaluateConfig, KeywordSpec, MajoritySpec, TfidfSpec  # noqa: E402
from pipeline.evaluate import evaluate_model  # noqa: E402
from pipeline.labelled_data import grouped_folds, in_document_order, read_training_data, sentence_texts  # noqa: E402
from pipeline.metrics import tune_thresholds  # noqa: E402
from pipeline.models.factory import build_model  # noqa: E402
from pipeline.models.tfidf import TfidfModel  # noqa: E402
from pipeline.reports import comparison_markdown, comparison_table, per_class_markdown, write_report  # noqa: E402
from pipeline.schema import LabelledSentence, commitment_indices, strategy_matrix  # noqa: E402


def shared_dir(explicit: str | None) -> Path:
    for candidate in (explicit, os.environ.get("PIPELINE_SHARED_DIR"), str(REPO.parent / "shared")):
        if candidate and (Path(candidate) / "gold" / "train.jsonl").is_file():
            return Path(candidate)
    raise SystemExit("shared data not found: pass --shared DIR or set PIPELINE_SHARED_DIR")


def out_of_fold(params: dict[str, Any], train: list[LabelledSentence], folds: list) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold (strategy, commitment) probabilities on train for one parameter set."""
    strategy = np.zeros((len(train), 3))
    commitment = np.zeros((len(train), 5))
    for fit_idx, held_idx in folds:
        model = TfidfModel(**params).fit([train[i] for i in fit_idx])
        held = [train[i] for i in held_idx]
        probs = model.predict_proba(sentence_texts(held))
        strategy[held_idx] = probs.strategy
        commitment[held_idx] = probs.commitment
    return strategy, commitment


def cv_scores(strategy: np.ndarray, commitment: np.ndarray, train: list[LabelledSentence]) -> dict[str, Any]:
    from sklearn.metrics import f1_score

    gold_c = commitment_indices([s.commitment for s in train])
    gold_s = strategy_matrix([s.strategy for s in train])
    thresholds = tune_thresholds(strategy, gold_s)
    return {
        "commitment_macro_f1": float(
            f1_score(gold_c, commitment.argmax(axis=1), labels=range(5), average="macro", zero_division=0)
        ),
        "strategy_macro_f1": float(f1_score(gold_s, strategy >= thresholds, average="macro", zero_division=0)),
        "strategy_macro_f1_at_0.5": float(f1_score(gold_s, strategy >= 0.5, average="macro", zero_division=0)),
        "thresholds": thresholds.tolist(),
    }


def tune(train: list[LabelledSentence], n_folds: int, log: list[dict[str, Any]]) -> dict[str, Any]:
    """Coordinate search: C and class weight first, then the feature choices one at a time."""
    folds = grouped_folds(train, n_folds=n_folds, seed=13)

    def run(params: dict[str, Any]) -> dict[str, Any]:
        started = time.time()
        scores = cv_scores(*out_of_fold(params, train, folds), train)
        entry = {"params": params, **scores, "seconds": round(time.time() - started, 1)}
        log.append(entry)
        print(json.dumps({k: v for k, v in entry.items() if k != "thresholds"}), flush=True)
        return entry

    base = TfidfSpec().model_dump(exclude={"kind"})
    stage_a = [
        run({**base, "C": c, "class_weight": cw})
        for cw in ("balanced", None)
        for c in (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
    ]
    best_c = max(stage_a, key=lambda e: e["commitment_macro_f1"])["params"]
    best_s = max(stage_a, key=lambda e: e["strategy_macro_f1"])["params"]
    # one class weight for both heads: the one of the better sum
    best_sum = max(stage_a, key=lambda e: e["commitment_macro_f1"] + e["strategy_macro_f1"])["params"]
    current = {**base, "class_weight": best_sum["class_weight"], "C": best_c["C"], "strategy_C": best_s["C"]}
    best = run(current)
    for change in (
        {"word_ngrams": (1, 1)},
        {"word_ngrams": (1, 3)},
        {"char_ngrams": (3, 6)},
        {"char_ngrams": (1, 4)},
        {"min_df": 1},
        {"max_features": None},
        {"context": True},
    ):
        entry = run({**best["params"], **change})
        if (
            entry["commitment_macro_f1"] + entry["strategy_macro_f1"]
            > best["commitment_macro_f1"] + best["strategy_macro_f1"]
        ):
            best = entry
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", help="the shared folder (holds gold/train.jsonl, gold/dev.jsonl)")
    parser.add_argument("--out", default="runs/bench/baselines", help="output folder")
    parser.add_argument("--tune", action="store_true", help="search TF-IDF settings by grouped CV on train")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--params", help="TF-IDF settings as JSON (e.g. the 'best' of a cv.json): skips the search")
    args = parser.parse_args()
    # one BLAS/OpenMP thread: on a small shared machine more threads only fight (measured 8x slower)
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)

    gold = shared_dir(args.shared) / "gold"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train, dev = read_training_data([gold / "train.jsonl"], gold / "dev.jsonl")
    assert dev is not None
    train = in_document_order(train)
    cfg = EvaluateConfig(output_dir=out)

    models = {
        "majority": build_model(MajoritySpec()),
        "keyword": build_model(KeywordSpec(lexicon=REPO / "configs" / "lexicon.yaml")),
        "tfidf (defaults)": build_model(TfidfSpec()),
    }
    search: list[dict[str, Any]] = []
    params: dict[str, Any] | None = json.loads(args.params) if args.params else None
    if args.tune and params is None:
        best = tune(train, args.folds, search)
        params = best["params"]
        (out / "cv.json").write_text(json.dumps({"best": best, "search": search}, indent=2, default=list))
    if params is not None:
        # honest: thresholds from out-of-fold predictions on train (the same grouped folds as the search)
        models["tfidf (tuned)"] = TfidfModel(**params, threshold_folds=args.folds)
        # declared optimistic variant: the same model with thresholds tuned on dev, as `pipeline train` does
        models["tfidf (tuned, dev thresholds)"] = TfidfModel(**params)

    reports = {}
    for name, model in models.items():
        started = time.time()
        model.fit(train, dev=dev if name.endswith("dev thresholds)") else None)
        print(f"{name}: fitted in {time.time() - started:.1f}s", flush=True)
        reports[name] = evaluate_model(model, dev, cfg, name=name)
        folder = out / re.sub(r"[^a-z0-9]+", "-", name).strip("-")
        write_report(reports[name], folder)
        model.save(folder / "model")

    from rich.console import Console

    Console(width=180).print(comparison_table(reports))
    lines = [
        f"Date: {date.today().isoformat()}. Train: gold/train.jsonl ({len(train)} sentences, "
        f"{len({s.doc_id for s in train})} documents); scored on gold/dev.jsonl ({len(dev)} sentences, "
        f"{len({s.doc_id for s in dev})} documents).",
        "",
        comparison_markdown(reports),
    ]
    if params is not None:
        tuned = models["tfidf (tuned)"]
        assert isinstance(tuned, TfidfModel)
        lines += [
            "",
            f"Tuned TF-IDF settings: `{json.dumps(params, default=list)}`; "
            f"strategy thresholds {tuned.strategy_thresholds_.tolist()} (out-of-fold on train).",
            "",
            "Per class, tuned TF-IDF on dev:",
            "",
            per_class_markdown(reports["tfidf (tuned)"]),
        ]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
