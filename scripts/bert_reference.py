"""The BERT reference runs behind docs/results.md ("## BERT"): fine-tune variants on gold train, score on dev.

Every variant is scored by the evaluation harness (`pipeline.evaluate`), like the baselines. Strategy
thresholds are tuned on dev for every model (the TF-IDF baseline does the same), so dev numbers are a little
optimistic for all of them alike; the "@0.5" columns show the untuned numbers.

    PIPELINE_SHARED_DIR=../shared python scripts/bert_reference.py finetune cls mean mean-context
    PIPELINE_SHARED_DIR=../shared python scripts/bert_reference.py ensemble mean-context
    PIPELINE_SHARED_DIR=../shared python scripts/bert_reference.py compare REFERENCE_MODEL MODEL

`compare` scores two saved fine-tunes (say, the same variant trained by two versions of the training loop) on
dev, each with its own stored thresholds, and their difference over the same document resamples
(`pipeline.metrics.paired_differences`), so "does the new run reproduce the reference?" gets an interval.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.config import BertSpec, EvaluateConfig, TfidfSpec
from pipeline.labelled_data import in_document_order, read_training_data, sentence_texts
from pipeline.metrics import paired_differences, tune_thresholds
from pipeline.models import load_model
from pipeline.models.bert import BertTwoHeadModel
from pipeline.models.tfidf import TfidfModel
from pipeline.schema import HeadProbabilities, strategy_matrix
from pipeline.scores import evaluate_predictions

SHARED = Path(os.environ.get("PIPELINE_SHARED_DIR", "../shared"))
OUT = Path(os.environ.get("BERT_REFERENCE_OUT", "runs/bert-reference"))
MINI = str(SHARED / "models" / "sv-bert-mini-cpu")
COMMON = {
    "backbone": MINI,
    "threads": 1,
    "epochs": 6,
    "early_stopping_patience": 2,
    "learning_rate": 1e-4,
    "batch_size": 16,
    "max_length": 128,
}

VARIANTS: dict[str, dict] = {
    # the README's probe: [CLS], no context
    "cls": {"pooling": "cls", "context": False},
    "mean": {"pooling": "mean", "context": False},
    "mean-context": {"pooling": "mean", "context": True},
    "mean-context-lr3e-4": {"pooling": "mean", "context": True, "learning_rate": 3e-4, "epochs": 10},
    "mean-lr3e-4": {"pooling": "mean", "context": False, "learning_rate": 3e-4, "epochs": 10},
    "mean-lr3e-4-focal": {
        "pooling": "mean",
        "context": False,
        "learning_rate": 3e-4,
        "epochs": 10,
        "commitment_loss": "focal",
    },
    "mean-lr3e-4-lld": {
        "pooling": "mean",
        "context": False,
        "learning_rate": 3e-4,
        "epochs": 10,
        "layerwise_lr_decay": 0.8,
        "head_learning_rate": 1e-3,
    },
}


def _scores(gold, probs: HeadProbabilities) -> dict[str, float]:
    report = evaluate_predictions(gold, probs, EvaluateConfig(bootstrap_samples=500))
    m = report.metrics
    return {
        k: round(m[k], 4)
        for k in (
            "commitment_macro_f1",
            "commitment_macro_f1_ci_low",
            "commitment_macro_f1_ci_high",
            "strategy_macro_f1",
            "strategy_macro_f1_ci_low",
            "strategy_macro_f1_ci_high",
        )
        if k in m
    }


def _untuned(probs: HeadProbabilities) -> HeadProbabilities:
    return HeadProbabilities(probs.strategy, probs.commitment, np.full(3, 0.5))


def _record(name: str, result: dict) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with (OUT / "results.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"name": name, **result}) + "\n")
    print(name, json.dumps(result), flush=True)


def finetune(names: list[str], backbone: str | None = None, suffix: str = "") -> None:
    train, dev = read_training_data([SHARED / "gold" / "train.jsonl"], SHARED / "gold" / "dev.jsonl")
    dev = in_document_order(dev)
    for name in names:
        spec = BertSpec(**{**COMMON, **VARIANTS[name], **({"backbone": backbone} if backbone else {})})
        started = time.monotonic()
        model = BertTwoHeadModel.from_spec(spec).fit(
            train, dev, callbacks=[lambda e, m: print(f"  epoch {e}: {json.dumps(m)}", flush=True)]
        )
        minutes = (time.monotonic() - started) / 60
        model.save(OUT / "models" / f"{name}{suffix}")
        probs = model.predict_proba(sentence_texts(dev))
        _record(
            f"{name}{suffix}",
            {
                "spec": {**VARIANTS[name], "backbone": spec.backbone},
                "minutes": round(minutes, 1),
                "epochs_run": len(model.history_),
                "tuned": _scores(dev, probs),
                "at_0.5": _scores(dev, _untuned(probs)),
            },
        )


def ensemble(names: list[str]) -> None:
    """Average each BERT's probabilities with TF-IDF + LR's (weight w on BERT); thresholds re-tuned on dev."""
    train, dev = read_training_data([SHARED / "gold" / "train.jsonl"], SHARED / "gold" / "dev.jsonl")
    dev = in_document_order(dev)
    inputs = sentence_texts(dev)
    tfidf = TfidfModel.from_spec(TfidfSpec()).fit(train, dev)
    tfidf_probs = tfidf.predict_proba(inputs)
    _record("tfidf", {"tuned": _scores(dev, tfidf_probs), "at_0.5": _scores(dev, _untuned(tfidf_probs))})
    gold_strategy = strategy_matrix([s.strategy for s in dev])
    for name in names:
        bert_probs = load_model(OUT / "models" / name).predict_proba(inputs)
        for w in (0.3, 0.5, 0.7):
            mixed = HeadProbabilities(
                strategy=w * bert_probs.strategy + (1 - w) * tfidf_probs.strategy,
                commitment=w * bert_probs.commitment + (1 - w) * tfidf_probs.commitment,
            )
            mixed.strategy_thresholds = tune_thresholds(mixed.strategy, gold_strategy)
            _record(f"ensemble {name} w={w}", {"tuned": _scores(dev, mixed), "at_0.5": _scores(dev, _untuned(mixed))})


def compare(reference: Path, model: Path) -> None:
    """Both saved models on dev (their own thresholds), and model minus reference on the same resamples."""
    _, dev = read_training_data([SHARED / "gold" / "train.jsonl"], SHARED / "gold" / "dev.jsonl")
    dev = in_document_order(dev)
    inputs = sentence_texts(dev)
    probs = {path: load_model(path).predict_proba(inputs) for path in (reference, model)}
    for path, p in probs.items():
        _record(f"scored {path}", {"tuned": _scores(dev, p), "at_0.5": _scores(dev, _untuned(p))})
    cfg = EvaluateConfig(bootstrap_samples=500)  # the draws of `_scores`: each side matches its interval
    differences = paired_differences(
        dev,
        probs[model],
        probs[reference],
        metrics=("commitment_macro_f1", "strategy_macro_f1"),
        samples=cfg.bootstrap_samples,
        seed=cfg.seed,
    )
    _record(
        f"paired {model} minus {reference}",
        {metric: {k: round(v, 4) for k, v in d.model_dump().items()} for metric, d in differences.items()},
    )


if __name__ == "__main__":
    torch.set_num_threads(1)  # 2 shared cores: a second thread only spins
    command, *args = sys.argv[1:]
    if command == "finetune":
        finetune(args)
    elif command == "finetune-on":  # finetune-on BACKBONE SUFFIX NAME...
        finetune(args[2:], backbone=args[0], suffix=args[1])
    elif command == "ensemble":
        ensemble(args)
    elif command == "compare":  # compare REFERENCE_MODEL MODEL
        compare(Path(args[0]), Path(args[1]))
    else:
        raise SystemExit(f"unknown command {command!r}: finetune | finetune-on | ensemble | compare")
