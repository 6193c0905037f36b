"""Typed configuration: one YAML file says everything about a run.

YAML -> environment interpolation (`${VAR}`, `${VAR:-default}`) -> `--set a.b=c` overrides -> pydantic
validation. Every error is one line naming the file and the key. The resolved config is what MLflow logs,
so any run can be repeated from it.

The sections themselves are defined by job: `pipeline.training_config` (model specs, training sources,
`data` and `train`) and `pipeline.config_sections` (every other section); every name stays importable from
here, the one place configs and users import from.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError

from pipeline import model_kinds
from pipeline.config_sections import (
    LABEL_OUTPUT_FORMATS,
    BackboneSize,
    EvaluateConfig,
    IngestConfig,
    LabelConfig,
    PretrainConfig,
    PseudoLabelConfig,
    RetrainConfig,
    RiksdagenQuery,
    Section,
    SegmentConfig,
    ServeConfig,
    SparkConfig,
    StudyConfig,
    StudyVariant,
    TokenizerConfig,
    TrackingConfig,
)
from pipeline.training_config import (
    BertSpec,
    DataConfig,
    EnsembleSpec,
    KeywordSpec,
    MajoritySpec,
    MemberSpec,
    ModelSpec,
    TfidfSpec,
    TrainConfig,
    TrainingSource,
)

__all__ = [
    "LABEL_OUTPUT_FORMATS",
    "BackboneSize",
    "BertSpec",
    "ConfigError",
    "DataConfig",
    "EnsembleSpec",
    "EvaluateConfig",
    "IngestConfig",
    "KeywordSpec",
    "LabelConfig",
    "MajoritySpec",
    "MemberSpec",
    "ModelSpec",
    "PipelineConfig",
    "PretrainConfig",
    "PseudoLabelConfig",
    "RetrainConfig",
    "RiksdagenQuery",
    "Section",
    "SegmentConfig",
    "ServeConfig",
    "SparkConfig",
    "Stage",
    "StudyConfig",
    "StudyVariant",
    "TfidfSpec",
    "TokenizerConfig",
    "TrackingConfig",
    "TrainConfig",
    "TrainingSource",
    "apply_overrides",
    "check_inputs",
    "dump_config",
    "flatten",
    "load_config",
]

Stage = Literal["ingest", "segment", "pretrain", "train", "evaluate", "label", "pseudo_label", "retrain"]


class ConfigError(ValueError):
    """A configuration problem, already phrased as one line for the user."""


class PipelineConfig(Section):
    """A whole run: which stages, in which order, and each stage's settings."""

    name: str = "default"
    stages: list[Stage] = Field(default_factory=lambda: ["segment", "train", "evaluate", "label"])
    data: DataConfig = Field(default_factory=DataConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    segment: SegmentConfig = Field(default_factory=SegmentConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    label: LabelConfig = Field(default_factory=LabelConfig)
    pseudo_label: PseudoLabelConfig = Field(default_factory=PseudoLabelConfig)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    study: StudyConfig | None = None
    source_file: Path | None = Field(default=None, exclude=True)
    overrides: list[str] = Field(default_factory=list, exclude=True)  # the --set values it was loaded with

    def experiment_name(self) -> str:
        if self.tracking.experiment:
            return self.tracking.experiment
        return self.source_file.stem if self.source_file else self.name

    def flat(self) -> dict[str, str]:
        """Dotted key -> value, for MLflow params."""
        return flatten(self.model_dump(mode="json"))


# --- loading --------------------------------------------------------------------------------------------

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(value: Any, where: str, file: Path) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, f"{where}.{k}" if where else str(k), file) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, f"{where}[{i}]", file) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError(f"{file}: {where}: environment variable {name} is not set")

    return _ENV.sub(sub, value)


def _parse_scalar(text: str) -> Any:
    return yaml.safe_load(text) if text != "" else ""


def _list_index(node: list[Any], part: str, key: str, file: Path) -> int:
    """A `--set` key part that addresses a list item (`train.model.members.0.epochs`)."""
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"{file}: --set {key}: {part!r} is not an index of a list of {len(node)} item(s)")
    return int(part)


def apply_overrides(raw: dict[str, Any], overrides: list[str], file: Path) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides (value parsed as YAML) to the raw mapping; a number indexes a list."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{file}: --set {item!r}: expected key=value, e.g. train.model.epochs=2")
        key, value = item.split("=", 1)
        key = key.strip()
        node: Any = raw
        parts = key.split(".")
        for part in parts[:-1]:
            if isinstance(node, list):
                child = node[_list_index(node, part, key, file)]
            else:
                child = node.get(part)
                if child is None:
                    child = node[part] = {}
            if not isinstance(child, dict | list):
                raise ConfigError(f"{file}: --set {key}: {part} is not a section")
            node = child
        if isinstance(node, list):
            node[_list_index(node, parts[-1], key, file)] = _parse_scalar(value)
        else:
            node[parts[-1]] = _parse_scalar(value)
    return raw


def _format_error(file: Path, error: ValidationError) -> str:
    first = error.errors()[0]
    # Discriminated unions add the tag (e.g. "bert") to the location; the user never wrote it.
    tags = set(model_kinds.names())
    parts = [str(p) for p in first["loc"] if str(p) not in tags and not str(p).startswith("function-")]
    loc = ".".join(parts)
    kind = first["type"]
    if kind == "extra_forbidden":
        message = "unknown key"
    elif kind == "missing":
        message = "missing required key"
    else:
        got = first.get("input")
        message = f"{first['msg'].removeprefix('Value error, ')} (got {str(got) if isinstance(got, Path) else got!r})"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{file}: {loc}: {message}{more}"


def load_config(path: Path | str, overrides: list[str] | None = None) -> PipelineConfig:
    """Read, interpolate, override and validate a YAML config; raise `ConfigError` with a one-line message."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{file}: config file not found")
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "?"
        raise ConfigError(f"{file}: not valid YAML at {where}: {getattr(exc, 'problem', exc)}") from None
    if raw is None:  # "all defaults" would then fail later on a default path nobody chose
        raise ConfigError(f"{file}: the config file is empty (no settings); see configs/ for examples")
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: top level must be a mapping of sections, got {type(raw).__name__}")
    raw = apply_overrides(raw, overrides or [], file)
    raw = _interpolate(raw, "", file)
    try:
        config = PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_error(file, exc)) from None
    config.source_file = file
    config.overrides = list(overrides or [])
    return config


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """Dotted key -> text; a list of sections (ensemble members, training sources) is flattened by index."""
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        out = {}
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}.{i}"))
        return out
    return {prefix: str(value)}


def dump_config(config: PipelineConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


# --- input checks ---------------------------------------------------------------------------------------

# Input keys of each stage, and the outputs a stage leaves for later stages of the same run.
_STAGE_INPUTS: dict[str, tuple[str, ...]] = {
    "ingest": ("ingest.input",),
    "segment": ("segment.input",),
    "pretrain": ("pretrain.corpus",),
    "train": ("data.train", "data.dev"),
    "evaluate": ("evaluate.data", "data.dev"),
    "label": ("label.input",),
    "pseudo_label": ("pseudo_label.corpus", "pseudo_label.exclude", "pseudo_label.teacher", "data.dev"),
    "retrain": ("data.train", "data.dev", "retrain.eval_data"),
}
_STAGE_OUTPUTS: dict[str, tuple[str, ...]] = {
    "ingest": ("ingest.output",),
    "segment": ("segment.output",),
    "pretrain": ("pretrain.output_dir",),
    "train": ("train.output_dir",),  # the model folders under it (a teacher for pseudo_label)
}


def _get(config: PipelineConfig, key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = getattr(node, part)
    return node


def check_inputs(config: PipelineConfig, stages: list[str]) -> None:
    """Fail before any work if an input file a stage needs is missing (unless an earlier stage makes it)."""
    produced: set[Path] = set()
    file = config.source_file or Path("<config>")
    for stage in stages:
        for key in _STAGE_INPUTS.get(stage, ()):
            if stage == "ingest" and config.ingest.source == "riksdagen":
                continue
            if key == "evaluate.data" and config.evaluate.data is None:
                continue
            if key == "data.dev" and stage == "evaluate" and config.evaluate.data is not None:
                continue
            if key == "data.dev" and stage == "pseudo_label" and not config.pseudo_label.exclude_dev:
                continue
            if key == "pseudo_label.teacher" and config.pseudo_label.teacher.startswith(("models:/", "runs:/")):
                continue
            value = _get(config, key)
            paths = value if isinstance(value, list) else [value]
            paths = [p.path if isinstance(p, TrainingSource) else p for p in paths]
            if key == "pretrain.corpus" and not paths and config.pretrain.mode == "scratch":
                raise ConfigError(f"{file}: pretrain.corpus: no corpus files given for pretraining from scratch")
            if key == "pseudo_label.corpus" and not paths:
                raise ConfigError(f"{file}: pseudo_label.corpus: no corpus files given to pseudo-label")
            for i, path in enumerate(paths):
                if path is None or any(p in produced for p in (Path(path), *Path(path).parents)):
                    continue
                if not Path(path).exists():
                    where = f"{key}[{i}]" if isinstance(value, list) else key
                    raise ConfigError(f"{file}: {where}: file not found: {path}")
        for key in _STAGE_OUTPUTS.get(stage, ()):
            produced.add(Path(_get(config, key)))
