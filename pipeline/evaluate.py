"""Scoring sentence models on labelled data: metrics, document-bootstrap intervals, calibration, plots.

Pure functions compute an `EvaluationReport` from gold labels and a model's probabilities; `write_report` is
the only function here that touches files. Every model (majority, keyword, TF-IDF, BERT) is scored by the same
code, so their numbers can be compared.

Metric keys (`EvaluationReport.metrics`; MLflow logs them, the retrain gate compares them: keep them stable):

- `commitment_macro_f1`, `commitment_accuracy`, `commitment_ece` (max-probability calibration error)
- `commitment_{precision,recall,f1}_{label}` and `commitment_support_{label}` for each commitment type
- `strategy_macro_f1` (mean of the three labels' F1), `strategy_micro_f1`, `strategy_exact_match`
  (all three decisions right), `strategy_ece` (mean of the per-label values)
- `strategy_{precision,recall,f1}_{label}`, `strategy_support_{label}`, `strategy_ece_{label}` per label
- `{metric}_ci_low`, `{metric}_ci_high`: 95% bootstrap interval (documents resampled) for each metric in
  `INTERVAL_METRICS`
- `n_sentences`, `n_documents`

F1 of a class with neither gold nor predicted examples counts as 0 (scikit-learn's `zero_division=0`).

Paired comparison (`paired_differences`, `paired_comparison`): two models scored on the same document resamples
(the same draws as the per-model intervals, for the same seed), so the interval is that of the difference
and the noise both models share (which documents happen to be drawn) cancels.

Threshold rule (`EvaluateConfig.threshold_rule`): strategy decisions use each model's own thresholds
(`as_trained`), thresholds tuned on the scored data itself for every model (`dev`: optimistic, it has seen
the answers), or 0.5 for every model (`half`). Commitment takes the argmax and ignores it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel

from pipeline.config import EvaluateConfig
from pipeline.labelled_data import in_document_order, sentence_texts
from pipeline.schema import (
    COMMITMENT_LABELS,
    STRATEGY_LABELS,
    HeadProbabilities,
    LabelledSentence,
    commitment_indices,
    decide,
    strategy_matrix,
)

if TYPE_CHECKING:
    from rich.table import Table

    from pipeline.models.base import SentenceModel

INTERVAL_METRICS: tuple[str, ...] = (
    "commitment_macro_f1",
    "commitment_accuracy",
    "strategy_macro_f1",
    "strategy_micro_f1",
    "strategy_exact_match",
)
HEADLINE_METRICS: tuple[str, ...] = ("commitment_macro_f1", "strategy_macro_f1")
REPORT_FILE = "report.json"
ERRORS_FILE = "errors.csv"
PAIRED_FILE = "paired.md"
PAIRED_JSON_FILE = "paired.json"
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


class PairedComparison(BaseModel):
    """Every scored model against one reference model (written as paired.md and paired.json)."""

    reference: str
    threshold_rule: str
    samples: int
    seed: int
    n_sentences: int
    n_documents: int
    differences: dict[str, dict[str, PairedDifference]]  # model -> metric -> difference

    def flat_metrics(self) -> dict[str, float]:
        """`paired.{model}.{metric}.{diff,ci_low,ci_high,share_better}`, for MLflow."""
        return {
            f"paired.{name}.{metric}.{field}": value
            for name, by_metric in self.differences.items()
            for metric, d in by_metric.items()
            for field, value in (
                ("diff", d.difference),
                ("ci_low", d.ci_low),
                ("ci_high", d.ci_high),
                ("share_better", d.share_better),
            )
        }


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
    _check_probabilities(gold, probs_model, "paired_differences (model)")
    _check_probabilities(gold, probs_reference, "paired_differences (reference)")
    doc_codes = _document_codes([s.doc_id for s in gold])
    gold_c, gold_s = _gold_arrays(gold)
    counts = []
    for probs in (probs_model, probs_reference):
        pred_c, pred_s = _decisions(probs)
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


def _check_probabilities(gold: Sequence[LabelledSentence], probs: HeadProbabilities, caller: str) -> None:
    n = len(gold)
    if n == 0:
        raise ValueError(f"{caller}: no gold sentences")
    if probs.commitment.shape != (n, len(COMMITMENT_LABELS)) or probs.strategy.shape != (n, len(STRATEGY_LABELS)):
        raise ValueError(
            f"{caller}: probabilities for {probs.commitment.shape[0]} / "
            f"{probs.strategy.shape[0]} sentences (commitment / strategy), gold has {n}"
        )


def _gold_arrays(gold: Sequence[LabelledSentence]) -> tuple[np.ndarray, np.ndarray]:
    return commitment_indices([s.commitment for s in gold]), strategy_matrix([s.strategy for s in gold])


def _decisions(probs: HeadProbabilities) -> tuple[np.ndarray, np.ndarray]:
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
        return replace(probs, strategy_thresholds=tune_thresholds(probs.strategy, _gold_arrays(gold)[1]))
    raise ValueError(f"threshold rule {rule!r}: expected one of {sorted(THRESHOLD_RULES)}")


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
                "head": "commitment",
                "id": gold[i].id,
                "doc_id": gold[i].doc_id,
                "text": gold[i].text,
                "gold": COMMITMENT_LABELS[gold_commitment[i]],
                "predicted": COMMITMENT_LABELS[predicted_commitment[i]],
                "confidence": round(float(confidence[i]), 4),
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
                "head": "strategy",
                "id": gold[i].id,
                "doc_id": gold[i].doc_id,
                "text": gold[i].text,
                "gold": label if gold_strategy[i, j] else f"not {label}",
                "predicted": label if predicted_strategy[i, j] else f"not {label}",
                "confidence": round(value, 4),
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
    _check_probabilities(gold, probs, "evaluate_predictions")
    probs = with_threshold_rule(gold, probs, cfg.threshold_rule)
    gold_c, gold_s = _gold_arrays(gold)
    pred_c, pred_s = _decisions(probs)
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


def evaluate_model(
    model: SentenceModel,
    data: Sequence[LabelledSentence],
    cfg: EvaluateConfig | None = None,
    name: str = "model",
) -> EvaluationReport:
    """Score a model in memory: it reads the sentences in document order, with their neighbours."""
    ordered = in_document_order(data)
    return evaluate_predictions(ordered, model.predict_proba(sentence_texts(ordered)), cfg, model_name=name)


@dataclass
class ScoredModels:
    """Several models scored on the same data: what the reports and the paired comparison are made from."""

    gold: list[LabelledSentence]  # in document order; row i of every probabilities is sentence i
    probabilities: dict[str, HeadProbabilities]  # strategy thresholds as the threshold rule chose them
    reports: dict[str, EvaluationReport]


def score_models(
    model_dirs: Sequence[Path], data: Sequence[LabelledSentence], cfg: EvaluateConfig | None = None
) -> ScoredModels:
    """The evaluate stage: load each saved model folder and score it on the same data.

    Keys are folder names (with the parent folder prefixed when two names collide).
    """
    from pipeline.models.base import load_model

    cfg = cfg or EvaluateConfig()
    gold = in_document_order(data)
    texts = sentence_texts(gold)
    names = [Path(d).name for d in model_dirs]
    scored = ScoredModels(gold=gold, probabilities={}, reports={})
    for folder, name in zip(model_dirs, names, strict=True):
        key = name if names.count(name) == 1 else f"{Path(folder).parent.name}/{name}"
        probs = with_threshold_rule(gold, load_model(folder).predict_proba(texts), cfg.threshold_rule)
        scored.probabilities[key] = probs
        scored.reports[key] = evaluate_predictions(gold, probs, cfg, model_name=key)
    return scored


def evaluate_models(
    model_dirs: Sequence[Path], data: Sequence[LabelledSentence], cfg: EvaluateConfig | None = None
) -> dict[str, EvaluationReport]:
    """`score_models`, reports only."""
    return score_models(model_dirs, data, cfg).reports


def paired_comparison(
    scored: ScoredModels,
    reference: str,
    cfg: EvaluateConfig | None = None,
    metrics: Sequence[str] = HEADLINE_METRICS,
) -> PairedComparison:
    """Every other scored model against `reference` (`paired_differences`, cfg's samples and seed)."""
    cfg = cfg or EvaluateConfig()
    if reference not in scored.probabilities:
        raise ValueError(
            f"evaluate.reference {reference!r} is not among the scored models {sorted(scored.probabilities)}"
        )
    samples = cfg.bootstrap_samples
    differences = {
        name: paired_differences(
            scored.gold, probs, scored.probabilities[reference], metrics=metrics, samples=samples, seed=cfg.seed
        )
        for name, probs in scored.probabilities.items()
        if name != reference
    }
    return PairedComparison(
        reference=reference,
        threshold_rule=cfg.threshold_rule,
        samples=samples,
        seed=cfg.seed,
        n_sentences=len(scored.gold),
        n_documents=len({s.doc_id for s in scored.gold}),
        differences=differences,
    )


# --- output ------------------------------------------------------------------------------------------


def _plot_confusions(report: EvaluationReport, out_dir: Path) -> list[Path]:
    from matplotlib.figure import Figure
    from sklearn.metrics import ConfusionMatrixDisplay

    written = []
    figure = Figure(figsize=(6.5, 5.5), layout="constrained")
    ax = figure.add_subplot()
    ConfusionMatrixDisplay(np.array(report.commitment_confusion), display_labels=list(COMMITMENT_LABELS)).plot(
        ax=ax, colorbar=False, xticks_rotation=30, cmap="Blues"
    )
    ax.set_title(f"{report.model}: commitment (rows gold)")
    path = out_dir / "confusion_commitment.png"
    figure.savefig(path, dpi=110)
    written.append(path)

    figure = Figure(figsize=(11, 4), layout="constrained")
    for j, label in enumerate(STRATEGY_LABELS):
        ax = figure.add_subplot(1, len(STRATEGY_LABELS), j + 1)
        ConfusionMatrixDisplay(np.array(report.strategy_confusion[label]), display_labels=["no", "yes"]).plot(
            ax=ax, colorbar=False, cmap="Blues"
        )
        ax.set_title(f"{label} (t={report.strategy_thresholds[j]:.2f})")
    figure.suptitle(f"{report.model}: strategy, one matrix per label (rows gold)")
    path = out_dir / "confusion_strategy.png"
    figure.savefig(path, dpi=110)
    written.append(path)

    figure = Figure(figsize=(6, 5), layout="constrained")
    ax = figure.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    for head, bins in report.calibration.items():
        ax.plot([b.confidence for b in bins], [b.observed for b in bins], marker="o", label=head)
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed frequency")
    ax.set_title(f"{report.model}: reliability")
    ax.legend()
    path = out_dir / "calibration.png"
    figure.savefig(path, dpi=110)
    written.append(path)
    return written


def write_report(report: EvaluationReport, out_dir: Path) -> list[Path]:
    """Write report.json, errors.csv and the confusion and reliability PNGs into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report_path = out_dir / REPORT_FILE
    report_path.write_text(json.dumps(report.model_dump(mode="json"), indent=2, ensure_ascii=False))
    errors_path = out_dir / ERRORS_FILE
    with errors_path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, ["head", "confidence", "gold", "predicted", "id", "doc_id", "text"])
        writer.writeheader()
        writer.writerows(report.errors)
    return [report_path, errors_path, *_plot_confusions(report, out_dir)]


def read_report(path: Path) -> EvaluationReport:
    """Read a report.json (or the folder holding one) written by `write_report`."""
    path = Path(path)
    if path.is_dir():
        path = path / REPORT_FILE
    return EvaluationReport.model_validate_json(path.read_text(encoding="utf-8"))


def _with_interval(metrics: Mapping[str, float], key: str) -> str:
    value = f"{metrics[key]:.3f}"
    if f"{key}_ci_low" in metrics:
        value += f" [{metrics[f'{key}_ci_low']:.3f}, {metrics[f'{key}_ci_high']:.3f}]"
    return value


_COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("commitment macro-F1", "commitment_macro_f1", True),
    ("commitment acc.", "commitment_accuracy", False),
    ("strategy macro-F1", "strategy_macro_f1", True),
    ("strategy micro-F1", "strategy_micro_f1", False),
    ("strategy exact", "strategy_exact_match", False),
    ("commitment ECE", "commitment_ece", False),
    ("strategy ECE", "strategy_ece", False),
)


_METRIC_TITLES = {key: title for title, key, _ in _COLUMNS}


def _cells(report: EvaluationReport) -> list[str]:
    return [
        _with_interval(report.metrics, key) if interval else f"{report.metrics[key]:.3f}"
        for _, key, interval in _COLUMNS
    ]


def comparison_table(reports: Mapping[str, EvaluationReport]) -> Table:
    """A rich table comparing models scored on the same data (intervals: 95% document bootstrap)."""
    from rich.table import Table

    first = next(iter(reports.values()), None)
    caption = (
        f"{int(first.metrics['n_sentences'])} sentences, {int(first.metrics['n_documents'])} documents; "
        "\\[low, high] = 95% bootstrap over documents"
        if first
        else None
    )
    if first and first.threshold_rule != "as_trained":
        caption += f"; strategy thresholds: {THRESHOLD_RULES[first.threshold_rule]}"
    table = Table(title="Model comparison", caption=caption)
    table.add_column("model")
    for title, _, _ in _COLUMNS:
        table.add_column(title, justify="right")
    for name, report in reports.items():
        table.add_row(name, *_cells(report))
    return table


def comparison_markdown(reports: Mapping[str, EvaluationReport]) -> str:
    """The same comparison as a Markdown table (for docs/results.md)."""
    header = ["model", *[title for title, _, _ in _COLUMNS]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, report in reports.items():
        lines.append("| " + " | ".join([name, *_cells(report)]) + " |")
    rules = {report.threshold_rule for report in reports.values()} - {"as_trained"}
    lines += [f"\nStrategy thresholds ({rule}): {THRESHOLD_RULES[rule]}." for rule in sorted(rules)]
    return "\n".join(lines)


def per_class_markdown(report: EvaluationReport) -> str:
    """Per-class precision / recall / F1 / support of one report, both heads, as Markdown."""
    lines = ["| head | label | precision | recall | F1 | support |", "|---|---|---|---|---|---|"]
    for head, labels in (("commitment", COMMITMENT_LABELS), ("strategy", STRATEGY_LABELS)):
        for label in labels:
            values = [report.metrics[f"{head}_{name}_{label}"] for name in ("precision", "recall", "f1")]
            support = int(report.metrics[f"{head}_support_{label}"])
            lines.append(f"| {head} | {label} | " + " | ".join(f"{v:.3f}" for v in values) + f" | {support} |")
    return "\n".join(lines)


def _signed(value: float) -> str:
    return f"{value:+.3f}".replace("-", "−")


def _paired_header(comparison: PairedComparison) -> list[str]:
    return ["model", "metric", "value", comparison.reference, "difference [95%]", "model ahead", "tied"]


def _paired_rows(comparison: PairedComparison) -> list[list[str]]:
    rows = []
    for name, by_metric in comparison.differences.items():
        for metric, d in by_metric.items():
            rows.append(
                [
                    name,
                    _METRIC_TITLES.get(metric, metric),
                    f"{d.model:.3f}",
                    f"{d.reference:.3f}",
                    f"{_signed(d.difference)} [{_signed(d.ci_low)}, {_signed(d.ci_high)}]",
                    f"{d.share_better:.1%}",
                    f"{d.share_tied:.1%}",
                ]
            )
    return rows


def paired_caption(comparison: PairedComparison) -> str:
    """What the paired numbers are, in one paragraph (above the Markdown table, under the rich one)."""
    return (
        f"Paired document bootstrap against {comparison.reference}: model − reference on the same "
        f"{comparison.samples} resamples of the {comparison.n_documents} documents ({comparison.n_sentences} "
        f"sentences, seed {comparison.seed}). Difference on the full data, [95% interval of the resampled "
        "differences]; model ahead: share of resamples where the model is strictly better (tied: equal). "
        f"Strategy thresholds: {THRESHOLD_RULES[comparison.threshold_rule]}."
    )


def paired_markdown(comparison: PairedComparison) -> str:
    """The paired comparison as Markdown: a caption paragraph, then one row per model and metric."""
    header = _paired_header(comparison)
    lines = [paired_caption(comparison), "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in _paired_rows(comparison)]
    return "\n".join(lines)


def paired_table(comparison: PairedComparison) -> Table:
    """The paired comparison as a rich table for the terminal."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"Paired against {comparison.reference}", caption=escape(paired_caption(comparison)))
    for i, title in enumerate(_paired_header(comparison)):
        table.add_column(title, justify="left" if i < 2 else "right")
    for row in _paired_rows(comparison):
        table.add_row(*row)
    return table
