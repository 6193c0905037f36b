"""The model registry edge: model cards, logging the pyfunc, versions and aliases, fetching models back.

`publish_model` is the one path from a trained model folder to a registered version (card -> log -> register),
used by `pipeline run`'s train stage and by `pipeline retrain`. Every new version gets the `challenger` alias;
`champion` moves only through `set_champion` (the retrain gate, or a deliberate human).
"""

from __future__ import annotations

import atexit
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipeline.config_sections import SegmentConfig
from pipeline.schema import COMMITMENT_LABELS, STRATEGY_LABELS
from pipeline.tracking import git_commit

if TYPE_CHECKING:
    from mlflow.models.model import ModelInfo

    from pipeline.labelling import ModelInfo as LabellingModelInfo
    from pipeline.models.base import SentenceModel

CHALLENGER = "challenger"
CHAMPION = "champion"


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


def publish_model(
    model_dir: Path,
    *,
    artifact: str,
    title: str,
    kind: str,
    segment_cfg: SegmentConfig,
    data: Mapping[str, str],
    metrics: Mapping[str, float],
    registered_model: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> tuple[ModelInfo, int | None]:
    """A trained model folder onto the active run: model card, the pyfunc under `artifact`, and (when
    `registered_model` is given) a new registered version with the `challenger` alias."""
    card = write_model_card(name=title, kind=kind, data=data, metrics=metrics)
    info = log_sentence_model(model_dir, artifact, segment_cfg, card=card)
    version = register(info.model_uri, registered_model, tags=tags, card=card) if registered_model else None
    return info, version


def log_sentence_model(model_dir: Path, name: str, segment_cfg: SegmentConfig, card: str | None = None) -> ModelInfo:
    """Log a saved model folder as the pyfunc (see `pipeline.pyfunc`) on the active run."""
    from pipeline.pyfunc import log_pyfunc

    info = log_pyfunc(model_dir, name, segment_cfg)
    if card is not None:
        mlflow.log_text(card, f"model_card/{name}.md")
    return info


def register(
    model_uri: str, registered_name: str, tags: Mapping[str, str] | None = None, card: str | None = None
) -> int:
    """Register a logged model as a new version and point the `challenger` alias at it.

    The version's description is its model card; the registered model's says what the model does and how
    its aliases move, so both read well in the UI's Models pages.
    """
    version = mlflow.register_model(model_uri, registered_name, tags=dict(tags or {}))
    client = MlflowClient()
    client.update_registered_model(registered_name, description=registered_model_description(registered_name))
    if card:
        client.update_model_version(registered_name, version.version, description=card)
    client.set_registered_model_alias(registered_name, CHALLENGER, version.version)
    return int(version.version)


def registered_model_description(name: str) -> str:
    """What the registered model is, its label scheme and how `challenger` / `champion` move (Markdown)."""
    strategy = ", ".join(f"`{x}`" for x in STRATEGY_LABELS)
    commitment = ", ".join(f"`{x}`" for x in COMMITMENT_LABELS)
    return "\n".join(
        [
            f"# {name}",
            "",
            "Labels each sentence of a Swedish government text on two heads: strategy dimension "
            f"(multi-label: {strategy}) and commitment type (one of {commitment}). Input: documents "
            "(`id`, `text`) or sentences (`doc_id`, `text`); output: one row per sentence with both heads' "
            "probabilities and offsets into the document text.",
            "",
            f"- `@{CHALLENGER}`: the newest registered version (every `ct-pipeline train` / `retrain` moves it).",
            f"- `@{CHAMPION}`: the version in use; only the retraining gate (`ct-pipeline retrain`) moves it, when "
            "a challenger beats it on the frozen evaluation set.",
            "",
            "Each version's description is its model card: data, dev scores with intervals, known limits.",
        ]
    )


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
    mlmodel = mlflow.models.Model.load(str(local))
    artifacts = mlmodel.flavors["python_function"].get("artifacts", {})
    relative = artifacts.get(MODEL_ARTIFACT, {}).get("path")
    if not relative:
        raise ValueError(f"{model_uri}: not a sentence-labeller pyfunc (no {MODEL_ARTIFACT!r} artifact)")
    return local / relative


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
    model = pin_model_uri(uri_or_path)
    if model.name is None or model.version is None:
        raise ValueError(
            f"label.model {uri_or_path!r}: expected models:/<name>@<alias>, models:/<name>/<version> "
            "or runs:/<run_id>/<model name>"
        )
    if download_dir is None:
        download_dir = Path(tempfile.mkdtemp(prefix="ct-label-model-"))
        atexit.register(shutil.rmtree, download_dir, True)
    folder = download_model_folder(model.pinned, Path(download_dir))
    return load_model(folder), LabellingModelInfo(name=model.name, version=model.version, uri=uri_or_path)


class ModelNotFound(LookupError):
    """The model URI names a registered model, version or alias that the store does not hold."""


@dataclass(frozen=True)
class PinnedModel:
    """A model URI and the URI pinned to what it names now; for a registered model (or a run's) its name and
    version, as the labelled rows' `model_name` / `model_version` columns say them."""

    requested: str
    pinned: str
    name: str | None = None
    version: str | None = None


def pin_model_uri(uri: str) -> PinnedModel:
    """Pin `models:/NAME@ALIAS` (or check `models:/NAME/N`) to a version, so a moving alias cannot change answers.

    `runs:/<run_id>/<name>` is named `<name>`, version `run-<run_id>`; anything else (a folder, a logged
    model id) is kept as given, unnamed. Raises `ModelNotFound` with one line naming the model and what the
    store holds instead.
    """
    if uri.startswith("runs:/"):
        run_id, _, artifact = uri.removeprefix("runs:/").partition("/")
        return PinnedModel(requested=uri, pinned=uri, name=artifact.strip("/") or None, version=f"run-{run_id}")
    rest = uri.removeprefix("models:/")
    if not uri.startswith("models:/") or not ("@" in rest or "/" in rest):
        return PinnedModel(requested=uri, pinned=uri)
    client = MlflowClient()
    name, alias, version = rest, None, None
    if "@" in rest:
        name, alias = rest.split("@", 1)
    else:
        name, version = rest.split("/", 1)
    try:
        registered = client.get_registered_model(name)
    except MlflowException:
        raise ModelNotFound(f"{uri}: no registered model {name!r} in this tracking store") from None
    if alias is not None:
        aliases = dict(registered.aliases or {})
        if alias not in aliases:
            known = ", ".join(sorted(aliases)) or "none"
            raise ModelNotFound(f"{uri}: model {name!r} has no alias {alias!r} (its aliases: {known})")
        version = str(aliases[alias])
    try:
        client.get_model_version(name, str(version))
    except MlflowException:
        raise ModelNotFound(f"{uri}: model {name!r} has no version {version!r}") from None
    return PinnedModel(requested=uri, pinned=f"models:/{name}/{version}", name=name, version=str(version))
