"""One model's scores on labelled data: `evaluate_predictions` turns gold labels and probabilities into an
`EvaluationReport`, whose flat `metrics` keys MLflow logs and the retrain gate compares (keep them stable):

- `commitment_macro_f1`, `commitment_accuracy`, `commitment_ece` (max-probability calibration error)
- `commitment_{precision,recall,f1}_{label}` and `commitment_support_{label}` for each commitment type
- `strategy_macro_f1` (mean of the three labels' F1), `strategy_micro_f1`, `strategy_exact_match`
  (all three decisions right), `strategy_ece` (mean of the per-label values)
- `strategy_{precision,recall,f1}_{label}`, `strategy_support_{label}`, `strategy_ece_{label}` per label
- `{metric}_ci_low`, `{metric}_ci_high`: 95% bootstrap interval (documents resampled) for each metric in
  `INTERVAL_METRICS`
- `n_sentences`, `n_documents`
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel

from pipeline.config_sections import EvaluateConfig
from pipeline.metrics import (
    CalibrationBin,
    bootstrap_metrics,
    calibration_bins,
    check_probabilities,
    decision_arrays,
    expected_calibration_error,
    gold_arrays,
    with_threshold_rule,
)
from pipeline.schema import COMMITMENT_LABELS, STRATEGY_LABELS, HeadProbabilities, LabelledSentence


class EvaluationReport(BaseModel):
    """Everything `evaluate_predictions` measured; `metrics` holds the flat, stable keys."""

    model: str
    metrics: dict[str, float]
    commitment_confusion: list[list[int]]  # rows gold, columns predicted, in COMMITMENT_LABELS order
    strategy_confusion: dict[str, list[list[int]]]  # label -> [[tn, fp], [fn, tp]]
    calibration: dict[str, list[CalibrationBin]]  # "commitment" and one key per strategy label
    strategy_thresholds: list[float]
    errors: list[dict[str, Any]]  # the most confident errors, both heads
    bootstrap_samples: int
    threshold_rule: str = "as_trained"  # how strategy_thresholds were chosen (THRESHOLD_RULES)


# --- the report --------------------------------------------------------------------------------------


def _most_confident_errors(
    gold: Sequence[LabelledSentence],
    probs: HeadProbabilities,
    predicted_commitment: np.ndarray,
    gold_commitment: np.ndarray,
    predicted_strategy: np.ndarray,
    gold_strategy: np.ndarray,
    top: int,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    confidence = probs.commitment.max(axis=1)
    wrong = np.flatnonzero(predicted_commitment != gold_commitment)
    for i in wrong[np.argsort(-confidence[wrong], kind="stable")][:top]:
        rows.append(
            {
                "text": gold[i].text,
                "gold": COMMITMENT_LABELS[gold_commitment[i]],
                "predicted": COMMITMENT_LABELS[predicted_commitment[i]],
                "confidence": round(float(confidence[i]), 4),
                "head": "commitment",
                "id": gold[i].id,
                "doc_id": gold[i].doc_id,
            }
        )
    # a strategy error is one wrong label decision; its confidence is the probability of the wrong decision
    decision_confidence = np.where(predicted_strategy == 1, probs.strategy, 1 - probs.strategy)
    candidates = [
        (float(decision_confidence[i, j]), i, j)
        for i, j in zip(*np.nonzero(predicted_strategy != gold_strategy), strict=True)
    ]
    for value, i, j in sorted(candidates, key=lambda c: (-c[0], c[1], c[2]))[:top]:
        label = STRATEGY_LABELS[j]
        rows.append(
            {
                "text": gold[i].text,
                "gold": label if gold_strategy[i, j] else f"not {label}",
                "predicted": label if predicted_strategy[i, j] else f"not {label}",
                "confidence": round(value, 4),
                "head": "strategy",
                "id": gold[i].id,
                "doc_id": gold[i].doc_id,
            }
        )
    return rows


def evaluate_predictions(
    gold: Sequence[LabelledSentence],
    probs: HeadProbabilities,
    cfg: EvaluateConfig | None = None,
    model_name: str = "model",
) -> EvaluationReport:
    """Score one model's probabilities against gold labels (row i of `probs` is sentence `gold[i]`)."""
    from sklearn.metrics import confusion_matrix, multilabel_confusion_matrix, precision_recall_fscore_support

    cfg = cfg or EvaluateConfig()
    n = len(gold)
    check_probabilities(gold, probs, "evaluate_predictions")
    probs = with_threshold_rule(gold, probs, cfg.threshold_rule)
    gold_c, gold_s = gold_arrays(gold)
    pred_c, pred_s = decision_arrays(probs)
    k_labels = list(range(len(COMMITMENT_LABELS)))

    metrics: dict[str, float] = {"n_sentences": float(n), "n_documents": float(len({s.doc_id for s in gold}))}
    p, r, f, support = precision_recall_fscore_support(gold_c, pred_c, labels=k_labels, zero_division=0)
    metrics["commitment_macro_f1"] = float(np.mean(f))
    metrics["commitment_accuracy"] = float(np.mean(gold_c == pred_c))
    for j, label in enumerate(COMMITMENT_LABELS):
        metrics[f"commitment_precision_{label}"] = float(p[j])
        metrics[f"commitment_recall_{label}"] = float(r[j])
        metrics[f"commitment_f1_{label}"] = float(f[j])
        metrics[f"commitment_support_{label}"] = float(support[j])

    p, r, f, support = precision_recall_fscore_support(gold_s, pred_s, average=None, zero_division=0)
    metrics["strategy_macro_f1"] = float(np.mean(f))
    _, _, micro, _ = precision_recall_fscore_support(gold_s, pred_s, average="micro", zero_division=0)
    metrics["strategy_micro_f1"] = float(micro)
    metrics["strategy_exact_match"] = float(np.mean(np.all(gold_s == pred_s, axis=1)))
    for j, label in enumerate(STRATEGY_LABELS):
        metrics[f"strategy_precision_{label}"] = float(p[j])
        metrics[f"strategy_recall_{label}"] = float(r[j])
        metrics[f"strategy_f1_{label}"] = float(f[j])
        metrics[f"strategy_support_{label}"] = float(support[j])

    calibration = {"commitment": calibration_bins(probs.commitment.max(axis=1), pred_c == gold_c, cfg.calibration_bins)}
    for j, label in enumerate(STRATEGY_LABELS):
        calibration[label] = calibration_bins(probs.strategy[:, j], gold_s[:, j], cfg.calibration_bins)
    metrics["commitment_ece"] = expected_calibration_error(calibration["commitment"])
    for label in STRATEGY_LABELS:
        metrics[f"strategy_ece_{label}"] = expected_calibration_error(calibration[label])
    metrics["strategy_ece"] = float(np.mean([metrics[f"strategy_ece_{label}"] for label in STRATEGY_LABELS]))

    if cfg.bootstrap_samples > 0:
        distribution = bootstrap_metrics(
            [s.doc_id for s in gold],
            gold_commitment=gold_c,
            predicted_commitment=pred_c,
            gold_strategy=gold_s,
            predicted_strategy=pred_s,
            samples=cfg.bootstrap_samples,
            seed=cfg.seed,
        )
        for key, values in distribution.items():
            metrics[f"{key}_ci_low"] = float(np.percentile(values, 2.5))
            metrics[f"{key}_ci_high"] = float(np.percentile(values, 97.5))

    strategy_confusion = multilabel_confusion_matrix(gold_s, pred_s)
    return EvaluationReport(
        model=model_name,
        metrics=metrics,
        commitment_confusion=confusion_matrix(gold_c, pred_c, labels=k_labels).tolist(),
        strategy_confusion={label: strategy_confusion[j].tolist() for j, label in enumerate(STRATEGY_LABELS)},
        calibration=calibration,
        strategy_thresholds=[float(t) for t in probs.strategy_thresholds],
        errors=_most_confident_errors(gold, probs, pred_c, gold_c, pred_s, gold_s, cfg.top_errors),
        bootstrap_samples=cfg.bootstrap_samples,
        threshold_rule=cfg.threshold_rule,
    )
