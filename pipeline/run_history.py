"""Reading the tracking store back for review: an experiment's runs, their curves, the evaluation files they
logged and the registered versions. The write side is `pipeline.tracking` (and `pipeline.registry`); the
notebooks get these frames from here and hand them to the pure functions of `pipeline.review_runs`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient


def load_runs(experiment: str, tracking_uri: str | None = None) -> pd.DataFrame:
    """All runs of an experiment as `mlflow.search_runs` returns them (newest first)."""
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    if MlflowClient().get_experiment_by_name(experiment) is None:
        raise ValueError(f"experiment {experiment!r} not found in the tracking store {mlflow.get_tracking_uri()}")
    return mlflow.search_runs(experiment_names=[experiment], order_by=["start_time DESC"])


def fetch_metric_history(
    client: MlflowClient,
    run_ids: Sequence[str],
    min_steps: int = 2,
    exclude_prefixes: Sequence[str] = ("system/",),
) -> pd.DataFrame:
    """The curves: (run_id, key, step, value) of each metric logged at `min_steps` or more steps.

    MLflow's own `system/*` samples (CPU, memory) are left out: they are machine load, not learning.
    """
    rows = []
    for run_id in run_ids:
        for key in client.get_run(run_id).data.metrics:
            if key.startswith(tuple(exclude_prefixes)):
                continue
            history = client.get_metric_history(run_id, key)
            if len(history) < min_steps:
                continue
            rows += [{"run_id": run_id, "key": key, "step": m.step, "value": m.value} for m in history]
    frame = pd.DataFrame(rows, columns=["run_id", "key", "step", "value"])
    return frame.sort_values(["run_id", "key", "step"]).reset_index(drop=True)


def _artifact_paths(client: MlflowClient, run_id: str, path: str = "") -> list[str]:
    out = []
    for item in client.list_artifacts(run_id, path or None):
        out += _artifact_paths(client, run_id, item.path) if item.is_dir else [item.path]
    return out


def fetch_evaluation_run_ids(client: MlflowClient, run_ids: Sequence[str]) -> list[str]:
    """The runs (in the given order) that logged an evaluation: those with artifacts under `evaluation/`."""
    return [run_id for run_id in run_ids if client.list_artifacts(run_id, "evaluation")]


def fetch_evaluation_images(client: MlflowClient, run_id: str, dst: Path) -> list[Path]:
    """Download a run's evaluation PNGs (confusion matrices, reliability diagrams) under `dst`.

    Each file keeps its artifact path (`<dst>/<run_id>/evaluation/<model>/calibration.png`): every model
    writes the same file names, so a flat download would show one model's plots under every name.
    """
    pngs = [p for p in _artifact_paths(client, run_id, "evaluation") if p.endswith(".png")]
    out = []
    for path in sorted(pngs):
        folder = Path(dst) / run_id / Path(path).parent
        folder.mkdir(parents=True, exist_ok=True)
        out.append(Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(folder))))
    return out


def fetch_confident_errors(client: MlflowClient, run_id: str, dst: Path, top: int = 20) -> pd.DataFrame:
    """The most confident errors a run's evaluation logged (`errors.csv`): the `top` of EACH model.

    Columns start with what a reviewer reads (text, gold, predicted, confidence, model); the configured
    model (`model`) comes first, then the baselines, each most confident first. Taking the top over all
    models would show only the baselines, whose confident mistakes crowd out the model's.
    """
    frames = []
    for path in _artifact_paths(client, run_id, "evaluation"):
        if Path(path).name != "errors.csv":
            continue
        folder = Path(dst) / run_id / Path(path).parent
        folder.mkdir(parents=True, exist_ok=True)
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(folder))
        frame = pd.read_csv(local, keep_default_na=False)
        parent = Path(path).parent.name
        frame["model"] = parent if parent != "evaluation" else ""
        frames.append(frame)
    columns = ["text", "gold", "predicted", "confidence", "model", "head", "doc_id", "id"]
    if not frames:
        return pd.DataFrame(columns=columns)
    errors = pd.concat(frames, ignore_index=True)
    errors["_shipped"] = errors["model"] != "model"
    errors = errors.sort_values(["_shipped", "model", "confidence"], ascending=[True, True, False], kind="stable")
    errors = errors.groupby("model", sort=False).head(top)
    return errors[[c for c in columns if c in errors.columns]].reset_index(drop=True)


def fetch_model_versions(client: MlflowClient, run_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Registered versions (name, version, aliases, run_id, created), limited to `run_ids` when given.

    Champion and challenger are the versions whose `aliases` hold those names.
    """
    rows = []
    aliases_by_name: dict[str, dict[str, int]] = {}
    wanted = set(run_ids) if run_ids is not None else None
    for version in client.search_model_versions():
        if wanted is not None and version.run_id not in wanted:
            continue
        # search results leave `aliases` empty; the registered model holds them (alias -> version)
        if version.name not in aliases_by_name:
            held = client.get_registered_model(version.name).aliases or {}
            aliases_by_name[version.name] = {alias: int(v) for alias, v in held.items()}
        rows.append(
            {
                "name": version.name,
                "version": int(version.version),
                "aliases": ", ".join(
                    sorted(a for a, v in aliases_by_name[version.name].items() if v == int(version.version))
                ),
                "run_id": version.run_id,
                "created": pd.to_datetime(version.creation_timestamp, unit="ms"),
            }
        )
    frame = pd.DataFrame(rows, columns=["name", "version", "aliases", "run_id", "created"])
    return frame.sort_values(["name", "version"], ascending=[True, False]).reset_index(drop=True)


def last_finished_run(experiment: str, tag: str) -> mlflow.entities.Run | None:
    """The newest finished run of `experiment` that carries a non-empty `tag`, or None."""
    runs = mlflow.search_runs(
        experiment_names=[experiment],
        filter_string=f"attributes.status = 'FINISHED' and tags.`{tag}` != ''",
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    return runs[0] if runs else None


def study_runs(experiment: str, reference: str) -> list[dict[str, Any]]:
    """The latest finished run of each variant in a study's experiment (paired against the same reference),
    as plain fields: name, description, overrides, metrics."""
    runs = mlflow.search_runs(
        experiment_names=[experiment],
        filter_string=f"attributes.status = 'FINISHED' and tags.`study.reference` = '{reference}'",
        order_by=["attributes.start_time DESC"],
        output_format="list",
    )
    latest: dict[str, dict[str, Any]] = {}
    for run in runs:
        latest.setdefault(
            run.info.run_name,
            {
                "name": run.info.run_name,
                "description": run.data.tags.get("study.description", ""),
                "overrides": run.data.params.get("variant.overrides", ""),
                "metrics": dict(run.data.metrics),
            },
        )
    return list(latest.values())
