"""What a stage's result leaves in its MLflow run: an evaluation's metrics and files, a labelling run's
counts, locations and pace, a study variant's scores and paired differences.

Part of the MLflow edge: the stage edges (`run.py`, `retrain.py`) hand typed results to these functions,
inside the runs `pipeline.tracking` opens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import pandas as pd

from pipeline.config import PipelineConfig
from pipeline.tracking import MAX_PARAM_CHARS, config_params

if TYPE_CHECKING:
    from pipeline.scores import EvaluationReport


def log_evaluation(report: EvaluationReport, out_files: Sequence[Path], prefix: str = "") -> None:
    """Log an evaluation's metrics, files (report, confusion PNGs), classification report and errors table.

    `out_files` is what `pipeline.evaluate.write_report` wrote; `prefix` namespaces metrics and artifacts when
    several models are scored in one run (`challenger` -> metric `challenger.commitment_macro_f1`).
    """
    from pipeline.reports import per_class_markdown

    mlflow.log_metrics({(f"{prefix}.{k}" if prefix else k): float(v) for k, v in report.metrics.items()})
    folder = f"evaluation/{prefix}" if prefix else "evaluation"
    for path in map(Path, out_files):
        if path.is_file():
            mlflow.log_artifact(str(path), folder)
    mlflow.log_text(per_class_markdown(report), f"{folder}/classification_report.md")
    if report.errors:
        mlflow.log_table(errors_frame(report.errors), f"{folder}/most_confident_errors.json")


def errors_frame(errors: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The most-confident-errors rows as a table of scalars (label lists `;`-joined)."""
    frame = pd.DataFrame(list(errors))
    for column in frame.columns:
        frame[column] = frame[column].map(lambda v: ";".join(map(str, v)) if isinstance(v, list | tuple) else v)
    return frame


def log_labelling(result: Any, cfg: Any, engine: str = "local") -> None:
    """A labelling run: counts, the input and output locations, the model that labelled, and the engine's pace."""
    mlflow.log_metrics(
        {
            "documents": result.documents,
            "labelled_documents": result.labelled,
            "sentences": result.sentences,
            "rejected_documents": result.rejected,
            "truncated_documents": result.warnings,
        }
    )
    model = getattr(result, "model", None)
    tags = {"label.engine": engine, "label.input": str(cfg.input), "label.output": str(result.output)}
    if model is not None:
        tags |= {"label.model_name": model.name, "label.model_version": model.version}
    if engine == "spark":
        tags |= {"spark.master": result.master, "spark.ui": result.ui_url or ""}
        mlflow.log_metrics(
            {
                "sentences_per_second": result.rows_per_second,
                "spark_startup_seconds": result.startup_seconds,
                "labelling_seconds": result.labelling_seconds,
            }
        )
    mlflow.set_tags(tags)
    summary = Path(result.summary)
    if summary.is_dir():  # the Spark engine's summary is a Parquet dataset
        mlflow.log_artifacts(str(summary), f"labelling/{summary.name}")
    elif summary.is_file():
        mlflow.log_artifact(str(summary), "labelling")
    if Path(result.rejects).is_file():
        mlflow.log_artifact(str(result.rejects), "labelling")


def log_study_variant(result: Any, config: PipelineConfig, reference: str) -> None:
    """One finished run per study variant: its overrides and key settings, dev scores, pairs and costs."""
    params = {"variant.overrides": " ".join(result.overrides)[:MAX_PARAM_CHARS] or "(base)"}
    params |= {k: v for k, v in config_params(config).items() if k.startswith(("train.model.", "data.train"))}
    with mlflow.start_run(run_name=result.name, tags={"stage": "study", "study.reference": reference}):
        mlflow.log_params({k: v[:MAX_PARAM_CHARS] for k, v in params.items()})
        mlflow.log_metrics(
            {
                **{f"dev_{k}": v for k, v in result.metrics.items()},
                **{f"selection_{k}": v for k, v in result.selection.items()},
                **{f"cv_{k}": v for k, v in result.cross_validated.items()},
                **{f"paired.{head}.diff": d for head, (d, _, _) in result.paired.items()},
                **{f"paired.{head}.ci_low": low for head, (_, low, _) in result.paired.items()},
                **{f"paired.{head}.ci_high": high for head, (_, _, high) in result.paired.items()},
                "fit_seconds": result.fit_seconds,
                "train_sentences": float(result.train_sentences),
            }
        )
        mlflow.set_tags({"study.description": result.description, "mlflow.note.content": result.description})
