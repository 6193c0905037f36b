"""The MLflow edge: where runs, datasets, artifacts, models, versions and aliases are written.

Stages never import mlflow; they return typed results and the CLI/run loop hands them to this module. The
store is an embedded sqlite database with a local artifact folder unless `MLFLOW_TRACKING_URI` (or
`tracking.uri`) names a server, which is checked before any work starts so a run never fails at the end.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import mlflow
import pandas as pd
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipeline.config import PipelineConfig, SegmentConfig, TrackingConfig, dump_config
from pipeline.io.digest import file_digest
from pipeline.schema import COMMITMENT_LABELS, STRATEGY_LABELS, LabelledSentence

if TYPE_CHECKING:
    from mlflow.models.model import ModelInfo

    from pipeline.labelling import ModelInfo as LabellingModelInfo
    from pipeline.models.base import SentenceModel
    from pipeline.scores import EvaluationReport

CHALLENGER = "challenger"
CHAMPION = "champion"
MAX_PARAM_CHARS = 500  # MLflow allows 6000; longer values are unreadable in the UI anyway
HEALTH_TIMEOUT_S = 5.0


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
                client.create_experiment(experiment, artifact_location=location)
            except MlflowException as exc:  # created meanwhile by a concurrent run
                if client.get_experiment_by_name(experiment) is None:
                    raise TrackingUnavailable(f"cannot create experiment {experiment!r}: {exc}") from exc
        mlflow.set_experiment(experiment)
    return uri


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
    """The resolved config as flat `section.key` params, long values cut to `MAX_PARAM_CHARS`."""
    out = {}
    for key, value in config.flat().items():
        out[key] = value if len(value) <= MAX_PARAM_CHARS else value[: MAX_PARAM_CHARS - 1] + "…"
    return out


def dataset_tags(config: PipelineConfig) -> dict[str, str]:
    """`dataset.<split>.digest` for each labelled file that exists (a missing file is the stage's error)."""
    tags = {}
    splits = {f"train{i}" if len(config.data.train) > 1 else "train": p for i, p in enumerate(config.data.train)}
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


def log_epoch(metrics: Mapping[str, float], epoch: int) -> None:
    """Per-epoch training metrics on the active run; a no-op outside a run so trainers stay usable alone."""
    if mlflow.active_run() is not None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=epoch)


def epoch_logger() -> Callable[[int, Mapping[str, float]], None]:
    """An epoch callback `(epoch, metrics)` for `SentenceModel.fit` (via `pipeline.train.fit_and_save`)."""
    return lambda epoch, metrics: log_epoch(metrics, epoch)


# --- data -----------------------------------------------------------------------------------------------


def sentences_frame(sentences: Sequence[LabelledSentence]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [s.id for s in sentences],
            "doc_id": [s.doc_id for s in sentences],
            "text": [s.text for s in sentences],
            "strategy": [";".join(s.strategy) for s in sentences],
            "commitment": [s.commitment for s in sentences],
        }
    )


def log_dataset(sentences: Sequence[LabelledSentence], name: str, context: str, source: Path | None = None) -> str:
    """Log labelled sentences as an `mlflow.data` input of the active run (`context` is train/dev/eval)."""
    with warnings.catch_warnings():  # a local path "can be interpreted in multiple ways": both are local files
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(
            sentences_frame(sentences),
            source=str(Path(source).resolve()) if source else None,
            name=name,
            targets="commitment",
        )
    mlflow.log_input(dataset, context=context)
    mlflow.set_tag(f"dataset.{context}.mlflow_digest", dataset.digest)
    return dataset.digest


# --- evaluation -----------------------------------------------------------------------------------------


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


# --- model card -----------------------------------------------------------------------------------------

KNOWN_LIMITS = (
    "Trained on sentences from Swedish government pages about terrorism and violent extremism; other "
    "domains and other languages are out of scope.",
    "The labelled set over-represents funding and support language, so class priors differ from the "
    "natural ones; calibrate before reading probabilities as frequencies.",
    "Labels describe what a sentence itself says; commitments spread over several sentences are labelled piecewise.",
    "Sentence boundaries come from the bundled segmenter; hard-wrapped or list-formatted text can be cut "
    "into fragments.",
)
_CARD_METRICS = re.compile(r"(commitment|strategy)_(macro_f1|micro_f1|accuracy|exact_match|ece|f1_\w+)$")


def write_model_card(
    *,
    name: str,
    kind: str,
    data: Mapping[str, str],
    metrics: Mapping[str, float],
    scored_on: str = "dev",
    notes: Sequence[str] = (),
) -> str:
    """A Markdown model card: what the model is, what it was trained and scored on, how well, its limits.

    `data` maps a split name to a description (file, size, digest); `metrics` is an evaluation's metrics
    on `scored_on`, whose `<metric>_ci_low` / `<metric>_ci_high` entries become the intervals.
    """
    strategy = ", ".join(f"`{x}`" for x in STRATEGY_LABELS)
    commitment = ", ".join(f"`{x}`" for x in COMMITMENT_LABELS)
    lines = [f"# Model card: {name}", "", f"- kind: `{kind}`", f"- git commit: `{git_commit()}`", ""]
    lines += ["## Data", "", *[f"- **{split}**: {text}" for split, text in data.items()], ""]
    lines += [
        "## Label scheme",
        "",
        f"- strategy (multi-label, one sigmoid per label): {strategy}",
        f"- commitment (exactly one; when several apply the first in this order wins): {commitment}",
        "",
        f"## Metrics ({scored_on})",
        "",
        "| metric | value | 95% interval (documents resampled) |",
        "|---|---:|---|",
    ]
    for key in sorted(k for k in metrics if _CARD_METRICS.match(k)):
        low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
        interval = f"{low:.3f} – {high:.3f}" if low is not None and high is not None else ""
        lines.append(f"| {key} | {metrics[key]:.3f} | {interval} |")
    lines += ["", "## Known limits", "", *[f"- {limit}" for limit in (*KNOWN_LIMITS, *notes)], ""]
    return "\n".join(lines)


# --- models and the registry ----------------------------------------------------------------------------


def log_sentence_model(model_dir: Path, name: str, segment_cfg: SegmentConfig, card: str | None = None) -> ModelInfo:
    """Log a saved model folder as the pyfunc (see `pipeline.pyfunc`) on the active run."""
    from pipeline.pyfunc import log_pyfunc

    info = log_pyfunc(model_dir, name, segment_cfg)
    if card is not None:
        mlflow.log_text(card, f"model_card/{name}.md")
    return info


def register(model_uri: str, registered_name: str, tags: Mapping[str, str] | None = None) -> int:
    """Register a logged model as a new version and point the `challenger` alias at it."""
    version = mlflow.register_model(model_uri, registered_name, tags=dict(tags or {}))
    MlflowClient().set_registered_model_alias(registered_name, CHALLENGER, version.version)
    return int(version.version)


def set_champion(name: str, version: int) -> None:
    """Move the `champion` alias; only the retraining gate (or a deliberate human) calls this."""
    MlflowClient().set_registered_model_alias(name, CHAMPION, str(version))


def get_alias_version(name: str, alias: str) -> int | None:
    """The version an alias points at, or None when the model or the alias does not exist."""
    try:
        return int(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def model_version_uri(name: str, version: int) -> str:
    return f"models:/{name}/{version}"


def download_model_folder(model_uri: str, dst: Path | None = None) -> Path:
    """Fetch a registered pyfunc and return its bundled `SentenceModel` folder (for in-process scoring)."""
    from pipeline.pyfunc import MODEL_ARTIFACT

    dst = Path(dst or tempfile.mkdtemp(prefix="ct-model-"))
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))
    mlmodel = _read_mlmodel(local)
    artifacts = mlmodel["flavors"]["python_function"].get("artifacts", {})
    relative = artifacts.get(MODEL_ARTIFACT, {}).get("path")
    if not relative:
        raise ValueError(f"{model_uri}: not a sentence-labeller pyfunc (no {MODEL_ARTIFACT!r} artifact)")
    return local / relative


def _read_mlmodel(local: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((local / "MLmodel").read_text())


# --- models for labelling ----------------------------------------------------------------------------------


def resolve_model(uri_or_path: str, download_dir: Path | None = None) -> tuple[SentenceModel, LabellingModelInfo]:
    """Load a model from a folder, `runs:/<run_id>/<name>`, `models:/<name>@<alias>` or `models:/<name>/<n>`.

    Registry URIs are pinned to a version before downloading, so the rows name the version that labelled
    them even if the alias moves during the run. Downloads go to `download_dir` (default: a temporary folder
    removed at exit).
    """
    from pipeline.label import model_from_folder
    from pipeline.labelling import ModelInfo as LabellingModelInfo
    from pipeline.models.base import load_model

    if not uri_or_path.startswith(("models:/", "runs:/")):
        return model_from_folder(uri_or_path)
    name, version, pinned = _registry_identity(uri_or_path, MlflowClient())
    if download_dir is None:
        download_dir = Path(tempfile.mkdtemp(prefix="ct-label-model-"))
        atexit.register(shutil.rmtree, download_dir, True)
    folder = download_model_folder(pinned, Path(download_dir))
    return load_model(folder), LabellingModelInfo(name=name, version=version, uri=uri_or_path)


def _registry_identity(uri: str, client: Any) -> tuple[str, str, str]:
    """(name, version, a URI pinned to that version) for a models:/ or runs:/ URI."""
    if uri.startswith("runs:/"):
        run_id, _, artifact = uri.removeprefix("runs:/").partition("/")
        if not run_id or not artifact:
            raise ValueError(f"label.model {uri!r}: expected runs:/<run_id>/<model name>")
        return artifact.strip("/"), f"run-{run_id}", uri
    rest = uri.removeprefix("models:/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        version = str(client.get_model_version_by_alias(name, alias).version)
    elif "/" in rest:
        name, version = rest.split("/", 1)
        if not version.isdigit():
            raise ValueError(f"label.model {uri!r}: expected models:/<name>/<version number> or …@<alias>")
    else:
        raise ValueError(f"label.model {uri!r}: expected models:/<name>@<alias> or models:/<name>/<version>")
    return name, version, f"models:/{name}/{version}"
