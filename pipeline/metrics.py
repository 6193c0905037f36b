"""The numbers: per-class scores, calibration, document-bootstrap intervals, paired differences, thresholds.

Pure functions of gold labels and probabilities, with no files and no models, so the models (threshold
tuning, per-epoch dev scores), the evaluate stage and the retrain gate all use the same code. `scores.py`
assembles them into an `EvaluationReport`; `evaluate.py` scores models; `reports.py` writes and renders.

F1 of a class with neither gold nor predicted examples counts as 0 (scikit-learn's `zero_division=0`).

Paired comparison (`paired_differences`): two models scored on the same document resamples (the same draws
as the per-model intervals, for the same seed), so the interval is that of the difference and the noise both
models share (which documents happen to be drawn) cancels.

Threshold rule (`EvaluateConfig.threshold_rule`): strategy decisions use each model's own thresholds
(`as_trained`), thresholds tuned on the scored data itself for every model (`dev`: optimistic, it has seen
the answers), or 0.5 for every model (`half`). Commitment takes the argmax and ignores it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
from pydantic import BaseModel

from pipeline.schema import (
    COMMITMENT_LABELS,
    STRATEGY_LABELS,
    HeadProbabilities,
    LabelledSentence,
    commitment_indices,
    decide,
    strategy_matrix,
)

INTERVAL_METRICS: tuple[str, ...] = (
    "commitment_macro_f1",
    "commitment_accuracy",
    "strategy_macro_f1",
    "strategy_micro_f1",
    "strategy_exact_match",
)
HEADLINE_METRICS: tuple[str, ...] = ("commitment_macro_f1", "strategy_macro_f1")
THRESHOLD_RULES: dict[str, str] = {
    "as_trained": "each model's own thresholds, as trained",
    "dev": "tuned on the scored data for every model (optimistic: the thresholds have seen the answers)",
    "half": "0.5 for every model",
}


class CalibrationBin(BaseModel):
    low: float
    high: float
    count: int
    confidence: float  # mean predicted probability in the bin
    observed: float  # fraction correct (commitment) or fraction positive (a strategy label)


class PairedDifference(BaseModel):
    """One metric, model minus reference, over the same document resamples.

    `difference` is on the full data; `mean_difference`, `ci_low`, `ci_high` (95% percentile interval) over
    the resamples. A resample counts as a tie when both values are equal (to 1e-12); `share_better` counts
    only resamples where the model is strictly ahead, so the reference is ahead in 1 - better - tied.
    """

    model: float
    reference: float
    difference: float
    mean_difference: float
    ci_low: float
    ci_high: float
    share_better: float
    share_tied: float


# --- pieces ------------------------------------------------------------------------------------------


def _f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros(np.shape(tp), dtype=float), where=denominator > 0)


def calibration_bins(probability: np.ndarray, outcome: np.ndarray, n_bins: int = 10) -> list[CalibrationBin]:
    """Equal-width reliability bins over [0, 1]; the last bin includes 1.0. Empty bins are left out."""
    probability = np.asarray(probability, dtype=float)
    outcome = np.asarray(outcome, dtype=float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(probability, edges[1:-1], right=False), 0, n_bins - 1)
    out = []
    for b in range(n_bins):
        mask = which == b
        if mask.any():
            out.append(
                CalibrationBin(
                    low=float(edges[b]),
                    high=float(edges[b + 1]),
                    count=int(mask.sum()),
                    confidence=float(probability[mask].mean()),
                    observed=float(outcome[mask].mean()),
                )
            )
    return out


def expected_calibration_error(bins: Sequence[CalibrationBin]) -> float:
    """Count-weighted mean gap between predicted probability and observed frequency."""
    total = sum(b.count for b in bins)
    if total == 0:
        return 0.0
    return float(sum(b.count * abs(b.confidence - b.observed) for b in bins) / total)


def tune_thresholds(probabilities: np.ndarray, gold: np.ndarray, grid: Sequence[float] | None = None) -> np.ndarray:
    """Per-label decision thresholds that maximise F1 on (probabilities, gold), both (n, labels).

    Ties go to the threshold closest to 0.5; a label with no positive example keeps 0.5.
    """
    from sklearn.metrics import f1_score

    candidates = np.asarray(grid if grid is not None else np.round(np.arange(0.05, 0.951, 0.025), 3))
    best = np.full(probabilities.shape[1], 0.5)
    for j in range(probabilities.shape[1]):
        if gold[:, j].sum() == 0:
            continue
        scores = [f1_score(gold[:, j], probabilities[:, j] >= t, zero_division=0) for t in candidates]
        top = max(scores)
        ties = [t for t, s in zip(candidates, scores, strict=True) if s == top]
        best[j] = min(ties, key=lambda t: abs(t - 0.5))
    return best


def _document_counts(
    doc_codes: np.ndarray, gold_c: np.ndarray, pred_c: np.ndarray, gold_s: np.ndarray, pred_s: np.ndarray
) -> dict[str, np.ndarray]:
    """Per-document sufficient statistics: every metric in INTERVAL_METRICS is a function of their sums."""
    n_docs = int(doc_codes.max()) + 1
    k = len(COMMITMENT_LABELS)
    confusion = np.zeros((n_docs, k, k))
    np.add.at(confusion, (doc_codes, gold_c, pred_c), 1)
    per_label = {}
    for name, mask in (
        ("tp", (gold_s == 1) & (pred_s == 1)),
        ("fp", (gold_s == 0) & (pred_s == 1)),
        ("fn", (gold_s == 1) & (pred_s == 0)),
    ):
        counts = np.zeros((n_docs, gold_s.shape[1]))
        np.add.at(counts, doc_codes, mask.astype(float))
        per_label[name] = counts
    exact = np.zeros(n_docs)
    np.add.at(exact, doc_codes, np.all(gold_s == pred_s, axis=1).astype(float))
    sentences = np.bincount(doc_codes, minlength=n_docs).astype(float)
    return {"confusion": confusion, **per_label, "exact": exact, "sentences": sentences}


def _metrics_from_counts(counts: Mapping[str, np.ndarray], weights: np.ndarray) -> dict[str, np.ndarray]:
    """INTERVAL_METRICS for each row of `weights` (samples, documents): how often each document was drawn."""
    confusion = np.einsum("bd,dij->bij", weights, counts["confusion"])
    tp = np.einsum("bii->bi", confusion)
    fp = confusion.sum(axis=1) - tp
    fn = confusion.sum(axis=2) - tp
    total = confusion.sum(axis=(1, 2))
    s_tp, s_fp, s_fn = (weights @ counts[k] for k in ("tp", "fp", "fn"))
    n = weights @ counts["sentences"]
    return {
        "commitment_macro_f1": _f1_from_counts(tp, fp, fn).mean(axis=1),
        "commitment_accuracy": tp.sum(axis=1) / np.maximum(total, 1),
        "strategy_macro_f1": _f1_from_counts(s_tp, s_fp, s_fn).mean(axis=1),
        "strategy_micro_f1": _f1_from_counts(s_tp.sum(axis=1), s_fp.sum(axis=1), s_fn.sum(axis=1)),
        "strategy_exact_match": (weights @ counts["exact"]) / np.maximum(n, 1),
    }


def bootstrap_metrics(
    doc_ids: Sequence[str],
    *,
    gold_commitment: np.ndarray,
    predicted_commitment: np.ndarray,
    gold_strategy: np.ndarray,
    predicted_strategy: np.ndarray,
    samples: int = 1000,
    seed: int = 13,
) -> dict[str, np.ndarray]:
    """Bootstrap distribution of INTERVAL_METRICS, resampling whole documents with replacement.

    Sentences of one document are not independent (same author, topic and labelling), so the unit of
    resampling is the document; each sample draws as many documents as there are.
    """
    doc_codes = _document_codes(doc_ids)
    counts = _document_counts(doc_codes, gold_commitment, predicted_commitment, gold_strategy, predicted_strategy)
    return _metrics_from_counts(counts, _document_draws(counts["sentences"].shape[0], samples, seed))


def _document_codes(doc_ids: Sequence[str]) -> np.ndarray:
    return np.unique(np.asarray(doc_ids), return_inverse=True)[1]


def _document_draws(n_docs: int, samples: int, seed: int) -> np.ndarray:
    """(samples, n_docs): how often each document is drawn in each resample; the seed fixes the draws."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_docs, np.full(n_docs, 1.0 / n_docs), size=samples).astype(float)


TIE_TOLERANCE = 1e-12


def paired_differences(
    gold: Sequence[LabelledSentence],
    probs_model: HeadProbabilities,
    probs_reference: HeadProbabilities,
    *,
    metrics: Sequence[str] = HEADLINE_METRICS,
    samples: int = 1000,
    seed: int = 13,
) -> dict[str, PairedDifference]:
    """Model minus reference for each metric, both scored on the same document resamples.

    Row i of both probabilities is sentence `gold[i]`; each model's own `strategy_thresholds` decide its
    strategy labels (apply a threshold rule first with `with_threshold_rule`). The draws are those of
    `bootstrap_metrics` for the same seed, so each model's side matches its own reported interval.
    """
    unknown = [m for m in metrics if m not in INTERVAL_METRICS]
    if unknown:
        raise ValueError(f"paired_differences: metrics {unknown} have no bootstrap; choose from {INTERVAL_METRICS}")
    if samples < 1:
        raise ValueError(f"paired_differences: samples must be at least 1, got {samples}")
    check_probabilities(gold, probs_model, "paired_differences (model)")
    check_probabilities(gold, probs_reference, "paired_differences (reference)")
    doc_codes = _document_codes([s.doc_id for s in gold])
    gold_c, gold_s = gold_arrays(gold)
    counts = []
    for probs in (probs_model, probs_reference):
        pred_c, pred_s = decision_arrays(probs)
        counts.append(_document_counts(doc_codes, gold_c, pred_c, gold_s, pred_s))
    n_docs = counts[0]["sentences"].shape[0]
    draws = _document_draws(n_docs, samples, seed)
    everything = np.ones((1, n_docs))
    model, reference = (_metrics_from_counts(c, draws) for c in counts)
    model_full, reference_full = (_metrics_from_counts(c, everything) for c in counts)
    out = {}
    for key in metrics:
        diff = model[key] - reference[key]
        tied = np.abs(diff) <= TIE_TOLERANCE
        out[key] = PairedDifference(
            model=float(model_full[key][0]),
            reference=float(reference_full[key][0]),
            difference=float(model_full[key][0] - reference_full[key][0]),
            mean_difference=float(diff.mean()),
            ci_low=float(np.percentile(diff, 2.5)),
            ci_high=float(np.percentile(diff, 97.5)),
            share_better=float(np.mean((diff > 0) & ~tied)),
            share_tied=float(np.mean(tied)),
        )
    return out


# --- decisions ---------------------------------------------------------------------------------------


def check_probabilities(gold: Sequence[LabelledSentence], probs: HeadProbabilities, caller: str) -> None:
    n = len(gold)
    if n == 0:
        raise ValueError(f"{caller}: no gold sentences")
    if probs.commitment.shape != (n, len(COMMITMENT_LABELS)) or probs.strategy.shape != (n, len(STRATEGY_LABELS)):
        raise ValueError(
            f"{caller}: probabilities for {probs.commitment.shape[0]} / "
            f"{probs.strategy.shape[0]} sentences (commitment / strategy), gold has {n}"
        )


def gold_arrays(gold: Sequence[LabelledSentence]) -> tuple[np.ndarray, np.ndarray]:
    return commitment_indices([s.commitment for s in gold]), strategy_matrix([s.strategy for s in gold])


def decision_arrays(probs: HeadProbabilities) -> tuple[np.ndarray, np.ndarray]:
    """Commitment class indices and the strategy multi-hot matrix, by the one decision rule (`schema.decide`)."""
    decisions = decide(probs)
    return decisions.commitment, decisions.strategy.astype(np.int64)


def with_threshold_rule(gold: Sequence[LabelledSentence], probs: HeadProbabilities, rule: str) -> HeadProbabilities:
    """The probabilities with strategy thresholds chosen by `rule` (see THRESHOLD_RULES); a copy, not in place.

    `dev` tunes on `gold` itself, the data about to be scored: use it only to compare models under one rule,
    never as an estimate of how a model will do.
    """
    if rule == "as_trained":
        return probs
    if rule == "half":
        return replace(probs, strategy_thresholds=np.full(len(STRATEGY_LABELS), 0.5))
    if rule == "dev":
        return replace(probs, strategy_thresholds=tune_thresholds(probs.strategy, gold_arrays(gold)[1]))
    raise ValueError(f"threshold rule {rule!r}: expected one of {sorted(THRESHOLD_RULES)}")


def head_macro_f1(gold: Sequence[LabelledSentence], probs: HeadProbabilities) -> dict[str, float]:
    """Both heads' macro-F1 (point estimates, no resampling) by the one decision rule."""
    check_probabilities(gold, probs, "head_macro_f1")
    return _decided_head_macro_f1(gold, *decision_arrays(probs))


def pooled_head_macro_f1(parts: Sequence[tuple[Sequence[LabelledSentence], HeadProbabilities]]) -> dict[str, float]:
    """Both heads' macro-F1 over (gold, probabilities) parts pooled, each part decided by its own thresholds
    (the held-out folds of a cross-validation, each predicted by its own model)."""
    for gold, probs in parts:
        check_probabilities(gold, probs, "pooled_head_macro_f1")
    decided = [decision_arrays(probs) for _, probs in parts]
    return _decided_head_macro_f1(
        [s for gold, _ in parts for s in gold],
        np.concatenate([c for c, _ in decided]),
        np.concatenate([s for _, s in decided]),
    )


def _decided_head_macro_f1(
    gold: Sequence[LabelledSentence], pred_c: np.ndarray, pred_s: np.ndarray
) -> dict[str, float]:
    gold_c, gold_s = gold_arrays(gold)
    doc_codes = _document_codes([s.doc_id for s in gold])
    counts = _document_counts(doc_codes, gold_c, pred_c, gold_s, pred_s)
    scores = _metrics_from_counts(counts, np.ones((1, counts["sentences"].shape[0])))
    return {metric: float(scores[metric][0]) for metric in HEADLINE_METRICS}
