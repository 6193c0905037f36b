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
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
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
REPORT_FILE = "report.json"
ERRORS_FILE = "errors.csv"


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
    _, doc_codes = np.unique(np.asarray(doc_ids), return_inverse=True)
    counts = _document_counts(doc_codes, gold_commitment, predicted_commitment, gold_strategy, predicted_strategy)
    n_docs = counts["sentences"].shape[0]
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n_docs, np.full(n_docs, 1.0 / n_docs), size=samples).astype(float)
    return _metrics_from_counts(counts, weights)


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
    if n == 0:
        raise ValueError("evaluate_predictions: no gold sentences")
    if probs.commitment.shape != (n, len(COMMITMENT_LABELS)) or probs.strategy.shape != (
        n,
        len(STRATEGY_LABELS),
    ):
        raise ValueError(
            f"evaluate_predictions: probabilities for {probs.commitment.shape[0]} / "
            f"{probs.strategy.shape[0]} sentences (commitment / strategy), gold has {n}"
        )
    gold_c = commitment_indices([s.commitment for s in gold])
    pred_c = probs.commitment.argmax(axis=1)
    gold_s = strategy_matrix([s.strategy for s in gold])
    pred_s = (probs.strategy >= probs.strategy_thresholds[None, :]).astype(np.int64)
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


def evaluate_models(
    model_dirs: Sequence[Path], data: Sequence[LabelledSentence], cfg: EvaluateConfig | None = None
) -> dict[str, EvaluationReport]:
    """The evaluate stage: load each saved model folder and score it on the same data.

    Reports are keyed by folder name (with the parent folder prefixed when two names collide).
    """
    from pipeline.models.base import load_model

    names = [Path(d).name for d in model_dirs]
    reports: dict[str, EvaluationReport] = {}
    for folder, name in zip(model_dirs, names, strict=True):
        key = name if names.count(name) == 1 else f"{Path(folder).parent.name}/{name}"
        reports[key] = evaluate_model(load_model(folder), data, cfg, name=key)
    return reports


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
