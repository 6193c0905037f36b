"""The MLflow edge: the store, runs, params, metrics, tags and artifacts.

Stages never import mlflow; they return typed results and the stage edges (`run.py`, `retrain.py`) hand them
to this module and its neighbours on the edge: `tracking_datasets` (the labelled data a run read),
`tracking_results` (what an evaluation, a labelling run or a study variant leaves in its run) and `registry`
(models and the registry). The store is an embedded sqlite database with a local artifact folder unless
`MLFLOW_TRACKING_URI` (or `tracking.uri`) names a server, which is checked before any work starts so a run
never fails at the end.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import mlflow
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipeline.config import PipelineConfig, dump_config, flatten
from pipeline.config_sections import TrackingConfig
from pipeline.io.digest import file_digest

MAX_PARAM_CHARS = 500  # MLflow allows 6000; longer values are unreadable in the UI anyway
HEALTH_TIMEOUT_S = 5.0
# MLflow 3 opens an experiment on its GenAI pages unless told it holds classic model-training runs.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
DEFAULT_EXPERIMENT_ID = "0"
# The headline numbers a run row shows (dev scores of the trained model, each with its interval).
HEADLINE_METRICS: tuple[str, ...] = (
    "commitment_macro_f1",
    "strategy_macro_f1",
    "commitment_accuracy",
    "strategy_micro_f1",
    "commitment_ece",
)


class TrackingUnavailable(RuntimeError):
    """The configured MLflow tracking server cannot be reached; raised before any work starts."""


# --- the store ------------------------------------------------------------------------------------------


def resolve_tracking_uri(cfg: TrackingConfig) -> str:
    """`MLFLOW_TRACKING_URI` wins over the config, so CI and servers can redirect a run without editing it."""
    return os.environ.get("MLFLOW_TRACKING_URI") or cfg.uri


def redact(uri: str) -> str:
    """The URI without user:password, for messages and logs."""
    parts = urlsplit(uri)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (relative to the working directory unless absolute)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :].split("?", 1)[0])


def check_server(uri: str, timeout_s: float = HEALTH_TIMEOUT_S) -> None:
    """Raise `TrackingUnavailable` unless an http(s) tracking server answers on `/health`."""
    url = uri.rstrip("/") + "/health"
    try:
        response = requests.get(url, timeout=timeout_s)
    except requests.RequestException as exc:
        reason = type(exc).__name__
        raise TrackingUnavailable(
            f"MLflow tracking server {redact(uri)} is not reachable ({reason}); start it, or point "
            "MLFLOW_TRACKING_URI / tracking.uri at a running server"
        ) from None
    if response.status_code != 200:
        raise TrackingUnavailable(
            f"MLflow tracking server {redact(uri)} answered /health with HTTP {response.status_code}"
        )


def configure_tracking(cfg: TrackingConfig, experiment: str | None = None) -> str:
    """Point MLflow at the store (checking a server is up first), create local folders, select the experiment.

    A new experiment in a local store gets its own folder under `cfg.artifact_location`; an experiment on a
    server keeps the server's artifact root (usually proxied `mlflow-artifacts:/`). Returns the URI used.
    """
    uri = resolve_tracking_uri(cfg)
    scheme = urlsplit(uri).scheme
    remote = scheme in ("http", "https")
    if remote:
        check_server(uri)
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    if experiment:
        client = MlflowClient()
        if client.get_experiment_by_name(experiment) is None:
            location = None
            if not remote:
                folder = Path(cfg.artifact_location) / _slug(experiment)
                folder.mkdir(parents=True, exist_ok=True)
                location = folder.resolve().as_uri()
            try:
                client.create_experiment(experiment, artifact_location=location, tags=EXPERIMENT_TAGS)
            except MlflowException as exc:  # created meanwhile by a concurrent run
                if client.get_experiment_by_name(experiment) is None:
                    raise TrackingUnavailable(f"cannot create experiment {experiment!r}: {exc}") from exc
        found = mlflow.set_experiment(experiment)
        for key, value in EXPERIMENT_TAGS.items():  # also on experiments made by older versions of the pipeline
            if found.tags.get(key) != value:
                client.set_experiment_tag(found.experiment_id, key, value)
        if not remote:
            _drop_empty_default_experiment(client)
    return uri


def _drop_empty_default_experiment(client: MlflowClient) -> None:
    """A local store's `Default` experiment is never used by the pipeline; empty, it only misleads the UI."""
    default = client.get_experiment(DEFAULT_EXPERIMENT_ID) if _exists(client, DEFAULT_EXPERIMENT_ID) else None
    if default is None or default.lifecycle_stage != "active":
        return
    if not client.search_runs([DEFAULT_EXPERIMENT_ID], max_results=1, run_view_type=mlflow.entities.ViewType.ALL):
        client.delete_experiment(DEFAULT_EXPERIMENT_ID)


def _exists(client: MlflowClient, experiment_id: str) -> bool:
    try:
        client.get_experiment(experiment_id)
    except MlflowException:
        return False
    return True


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "experiment"


# --- runs -----------------------------------------------------------------------------------------------


def git_commit(cwd: Path | None = None) -> str:
    """The checked-out commit (with `-dirty` when the tree has changes), or `unknown` outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def config_params(config: PipelineConfig) -> dict[str, str]:
    """The resolved config as flat `section.key` params, long values cut to `MAX_PARAM_CHARS`; a list of
    sections by index, as `--set` takes it (`train.model.members.0.learning_rate`), not one cut repr."""
    return {key: _cut(value) for key, value in config.flat().items()}


def dataset_tags(config: PipelineConfig) -> dict[str, str]:
    """`dataset.<split>.digest` for each labelled file that exists (a missing file is the stage's error)."""
    tags = {}
    files = config.data.train_files
    splits = {f"train{i}" if len(files) > 1 else "train": p for i, p in enumerate(files)}
    splits["dev"] = config.data.dev
    for split, path in splits.items():
        if Path(path).is_file():
            tags[f"dataset.{split}.digest"] = file_digest([Path(path)])[:16]
    return tags


def _system_metrics(cfg: TrackingConfig) -> bool:
    if not cfg.log_system_metrics:
        return False
    try:
        import psutil  # noqa: F401
    except ImportError:
        return False
    return True


@contextmanager
def pipeline_run(config: PipelineConfig, run_name: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """The parent run of a `pipeline run`: config as params and YAML; git commit and data digests as tags."""
    configure_tracking(config.tracking, config.experiment_name())
    tags = {
        "git_commit": git_commit(),
        "config_file": str(config.source_file) if config.source_file else "",
        "pipeline": config.name,
        **dataset_tags(config),
    }
    with mlflow.start_run(
        run_name=run_name or f"pipeline:{config.name}",
        tags=tags,
        log_system_metrics=_system_metrics(config.tracking),
    ) as run:
        mlflow.log_params(config_params(config))
        mlflow.log_text(dump_config(config), "config/resolved.yaml")
        yield run


@contextmanager
def stage_run(config: PipelineConfig, stage: str) -> Iterator[mlflow.ActiveRun]:
    """A nested run for one stage; opens the parent `pipeline_run` first when called on its own."""
    if mlflow.active_run() is None:
        with pipeline_run(config, run_name=f"pipeline:{config.name}:{stage}"), _nested(stage) as run:
            yield run
    else:
        with _nested(stage) as run:
            yield run


@contextmanager
def _nested(stage: str) -> Iterator[mlflow.ActiveRun]:
    with mlflow.start_run(run_name=stage, nested=True, tags={"stage": stage}) as run:
        yield run


@contextmanager
def model_run(name: str, settings: Mapping[str, str], role: str) -> Iterator[mlflow.ActiveRun]:
    """A nested run for one trained model: its own settings as params, then its dev scores and logged model.

    One row per model in the runs table pairs what the model is with how well it does; the logged model's
    metrics (the Models tab) are this run's, so it lists the model's own F1 and fit time and nobody else's.
    """
    with mlflow.start_run(run_name=name, nested=True, tags={"stage": "train", "model": name, "role": role}) as run:
        mlflow.log_params(settings)
        yield run


def model_params(spec: Any) -> dict[str, str]:
    """A model spec as flat params; an ensemble's members become `member0.learning_rate`, `member1.kind`, ..."""
    dumped = spec.model_dump(mode="json") if hasattr(spec, "model_dump") else dict(spec)
    members = dumped.pop("members", None) or []
    out = {key: _cut(value) for key, value in flatten(dumped).items()}
    for i, member in enumerate(members):
        out.update({f"member{i}.{key}": _cut(value) for key, value in flatten(member).items()})
    return out


def _cut(value: str) -> str:
    return value if len(value) <= MAX_PARAM_CHARS else value[: MAX_PARAM_CHARS - 1] + "…"


def pipeline_run_id() -> str:
    """The top run above the active one (the `pipeline run` parent), following `mlflow.parentRunId`."""
    active = mlflow.active_run()
    if active is None:
        raise RuntimeError("pipeline_run_id: no active MLflow run")
    client, run_id = MlflowClient(), active.info.run_id
    while parent := client.get_run(run_id).data.tags.get("mlflow.parentRunId"):
        run_id = parent
    return run_id


def log_model_scores(metrics: Mapping[str, float], model_id: str | None = None) -> None:
    """A model's dev scores on the active run (and its logged model): headline numbers with intervals."""
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, model_id=model_id)


def log_pipeline_metrics(metrics: Mapping[str, float]) -> None:
    """Metrics on the `pipeline run` parent of the active run, so its row shows them beside the settings."""
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, run_id=pipeline_run_id())


def headline(metrics: Mapping[str, float]) -> dict[str, float]:
    """The headline metrics and their `_ci_low` / `_ci_high` bounds, as far as `metrics` has them."""
    keys = [f"{k}{suffix}" for k in HEADLINE_METRICS for suffix in ("", "_ci_low", "_ci_high")]
    return {k: float(metrics[k]) for k in keys if k in metrics}


def log_epoch(metrics: Mapping[str, float], epoch: int) -> None:
    """Per-epoch training metrics on the active run; a no-op outside a run so trainers stay usable alone."""
    if mlflow.active_run() is not None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=epoch)


def epoch_logger() -> Callable[[int, Mapping[str, float]], None]:
    """An epoch callback `(epoch, metrics)` for `SentenceModel.fit` (via `pipeline.train.fit_and_save`)."""
    return lambda epoch, metrics: log_epoch(metrics, epoch)


# --- logging from the stage edges ---------------------------------------------------------------------------


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


def log_new_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log only the metrics the active run does not have yet (a summary must not repeat a curve's last point)."""
    active = mlflow.active_run()
    logged = MlflowClient().get_run(active.info.run_id).data.metrics if active else {}
    log_metrics({k: v for k, v in metrics.items() if k not in logged}, step=step)


def log_stage_times(timings: Mapping[str, float], items: int) -> None:
    """Where a stage's time went (pipeline.timing): `seconds_<phase>` per phase and the stage's items per second."""
    metrics = {f"seconds_{name}": float(seconds) for name, seconds in timings.items()}
    total = timings.get("total", 0.0)
    if total > 0:
        metrics["sentences_per_second"] = items / total
    mlflow.log_metrics(metrics)


def set_tags(tags: Mapping[str, object]) -> None:
    mlflow.set_tags({k: str(v) for k, v in tags.items()})


def log_text(text: str, artifact_file: str) -> None:
    mlflow.log_text(text, artifact_file)


def log_dict(data: Mapping[str, Any], artifact_file: str) -> None:
    mlflow.log_dict(dict(data), artifact_file)


def log_file(path: Path, folder: str) -> None:
    """Log a file as an artifact under `folder`, if it exists (a stage may not have written it)."""
    if Path(path).is_file():
        mlflow.log_artifact(str(path), folder)
