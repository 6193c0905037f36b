"""The data behind the experiment review (notebook 01): runs, the models they scored, per-class scores and
which version each alias points at.

Pure functions of the frames `pipeline.run_history` reads from MLflow, drawn by `pipeline.review_plots`; the
notebook only chooses parameters, calls these and plots, so everything that could be wrong (which columns,
which metric names) lives here, where it is tested.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

import pandas as pd

from pipeline.schema import COMMITMENT_LABELS, STRATEGY_LABELS

# The headline numbers of a run, as `pipeline.evaluate` names them (optionally behind a `<model>.` prefix).
KEY_METRICS: tuple[str, ...] = (
    "commitment_macro_f1",
    "strategy_macro_f1",
    "commitment_accuracy",
    "strategy_micro_f1",
    "commitment_ece",
)
# Config params worth a column in the runs table (those a run did not log are left out).
KEY_PARAMS: tuple[str, ...] = (
    "train.model.kind",
    "train.model.backbone",
    "train.model.context",
    "train.model.learning_rate",
    "train.model.epochs",
    "train.model.commitment_loss",
    "pretrain.mode",
    "data.train",
)
_PER_CLASS = re.compile(
    r"^(?:(?P<model>.+)\.)?(?P<head>commitment|strategy)_(?P<measure>f1|precision|recall)_(?P<label>[a-z_]+)$"
)


def runs_table(
    runs: pd.DataFrame, metrics: Sequence[str] = KEY_METRICS, params: Sequence[str] = KEY_PARAMS
) -> pd.DataFrame:
    """One row per run: name, stage, status, duration, the key params and every key metric (prefixed too)."""
    if runs.empty:
        return pd.DataFrame(columns=["run_id", "run_name", "stage", "status", "start_time", "duration_s"])
    table = pd.DataFrame(
        {
            "run_id": runs["run_id"],
            "run_name": runs.get("tags.mlflow.runName"),
            "stage": runs.get("tags.stage"),
            "parent_run_id": runs.get("tags.mlflow.parentRunId"),
            "status": runs["status"],
            "start_time": runs["start_time"],
            "duration_s": (runs["end_time"] - runs["start_time"]).dt.total_seconds(),
        }
    )
    for param in params:
        if f"params.{param}" in runs:
            table[param] = runs[f"params.{param}"]
    metric_columns = [c for c in runs.columns if c.startswith("metrics.") and c.split(".")[-1] in metrics]
    for column in sorted(metric_columns):
        table[column.removeprefix("metrics.")] = runs[column]
    return table.dropna(axis=1, how="all").reset_index(drop=True)


def model_scores(
    runs: pd.DataFrame, metrics: Sequence[str] = ("commitment_macro_f1", "strategy_macro_f1")
) -> pd.DataFrame:
    """Each scored model's headline numbers: run_id, run_name, model, metric, value, ci_low, ci_high.

    An evaluate run that scored several models logs `<model>.<metric>`; a model's own run (tag `model`, one
    per trained model) logs `<metric>`. Unprefixed metrics of any other run (the pipeline run's headline copy)
    are not a model of their own and are left out.
    """
    rows = []
    for run, key, value in _logged_metrics(runs):
        model, _, metric = key.rpartition(".")
        if metric not in metrics:
            continue
        model = model or _model_tag(run)
        if not model:
            continue
        rows.append(
            {
                **_model_row(run, model),
                "metric": metric,
                "value": float(value),
                "ci_low": run.get(f"metrics.{key}_ci_low"),
                "ci_high": run.get(f"metrics.{key}_ci_high"),
            }
        )
    return pd.DataFrame(rows, columns=["run_id", "run_name", "model", "metric", "value", "ci_low", "ci_high"])


def per_class_scores(runs: pd.DataFrame, measure: str = "f1") -> pd.DataFrame:
    """Long table (run_id, run_name, model, head, label, value) of per-class scores of every scored model."""
    known = {"commitment": set(COMMITMENT_LABELS), "strategy": set(STRATEGY_LABELS)}
    rows = []
    for run, key, value in _logged_metrics(runs):
        match = _PER_CLASS.match(key)
        if not match or match["measure"] != measure or match["label"] not in known[match["head"]]:
            continue
        model = match["model"] or _model_tag(run)
        if not model:
            continue
        rows.append({**_model_row(run, model), "head": match["head"], "label": match["label"], "value": float(value)})
    return pd.DataFrame(rows, columns=["run_id", "run_name", "model", "head", "label", "value"])


def _logged_metrics(runs: pd.DataFrame) -> Iterator[tuple[pd.Series, str, object]]:
    """(run, metric name, value) for every metric each run logged (a run's missing metrics are NaN: skipped)."""
    for _, run in runs.iterrows():
        for column, value in run.items():
            if isinstance(column, str) and column.startswith("metrics.") and not pd.isna(value):
                yield run, column.removeprefix("metrics."), value


def _model_row(run: pd.Series, model: str) -> dict[str, object]:
    return {"run_id": run["run_id"], "run_name": run.get("tags.mlflow.runName"), "model": model}


def _model_tag(run: pd.Series) -> str | None:
    value = run.get("tags.model")
    return value if isinstance(value, str) and value else None


def model_runs_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per trained model (its own run): settings, then the dev scores with their 95% intervals.

    The same row the MLflow UI shows for a model run: `kind` and the other spec params (ensemble members
    as `member0.*`), `fit_seconds`, and each headline metric as `value [low, high]` columns.
    """
    if runs.empty or "tags.model" not in runs:
        return pd.DataFrame(columns=["model", "role", "run_id"])
    models = runs[runs["tags.model"].notna()]
    table = pd.DataFrame({"model": models["tags.model"], "role": models.get("tags.role"), "run_id": models["run_id"]})
    for column in sorted(c for c in models.columns if c.startswith("params.")):
        table[column.removeprefix("params.")] = models[column]
    for metric in (*KEY_METRICS, "fit_seconds"):
        for suffix in ("", "_ci_low", "_ci_high"):
            column = f"metrics.{metric}{suffix}"
            if column in models:
                table[f"{metric}{suffix}"] = models[column]
    return table.dropna(axis=1, how="all").reset_index(drop=True)


def alias_versions(versions: pd.DataFrame, aliases: Sequence[str] = ("champion", "challenger")) -> pd.DataFrame:
    """Which version each alias points at, per registered model (a missing alias is absent)."""
    rows = []
    for _, row in versions.iterrows():
        held = [a.strip() for a in str(row["aliases"]).split(",") if a.strip()]
        rows += [
            {"name": row["name"], "alias": a, "version": row["version"], "run_id": row["run_id"]}
            for a in aliases
            if a in held
        ]
    return pd.DataFrame(rows, columns=["name", "alias", "version", "run_id"])
