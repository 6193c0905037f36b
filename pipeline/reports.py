"""Evaluation results on disk and on screen: report.json, errors.csv, plots, comparison and paired tables.

`write_report` and `read_report` are the only functions here that touch files; the rest render Markdown
(for MLflow and docs) and rich tables (for the terminal).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.evaluate import PairedComparison
from pipeline.metrics import THRESHOLD_RULES
from pipeline.schema import COMMITMENT_LABELS, STRATEGY_LABELS
from pipeline.scores import EvaluationReport

if TYPE_CHECKING:
    from rich.table import Table

REPORT_FILE = "report.json"
ERRORS_FILE = "errors.csv"
# What a reviewer reads first: the sentence, what it should be, what the model said and how sure it was.
ERROR_COLUMNS: tuple[str, ...] = ("text", "gold", "predicted", "confidence", "head", "id", "doc_id")
PAIRED_FILE = "paired.md"
PAIRED_JSON_FILE = "paired.json"

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
        writer = csv.DictWriter(handle, list(ERROR_COLUMNS))
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
