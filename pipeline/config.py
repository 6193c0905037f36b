"""Typed configuration: one YAML file says everything about a run.

YAML -> environment interpolation (`${VAR}`, `${VAR:-default}`) -> `--set a.b=c` overrides -> pydantic
validation. Every error is one line naming the file and the key. The resolved config is what MLflow logs,
so any run can be repeated from it.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from pipeline import model_kinds

Stage = Literal["ingest", "segment", "pretrain", "train", "evaluate", "label", "pseudo_label", "retrain"]


class ConfigError(ValueError):
    """A configuration problem, already phrased as one line for the user."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- ingest ---------------------------------------------------------------------------------------------


class RiksdagenQuery(Section):
    search: str = "terrorism"
    doc_types: list[Literal["frs", "ip"]] = Field(default_factory=lambda: ["frs"])
    session: str | None = None  # riksmöte, "2020/21"
    date_from: str | None = None
    date_to: str | None = None
    max_documents: int = 100
    base_url: str = "https://data.riksdagen.se"
    cache_dir: Path = Path("runs/cache/riksdagen")
    # listings (which documents match) change as answers are published: a cached one is used for this long;
    # a document's text and status, once fetched, stay cached (null: listings never expire either)
    listing_ttl_s: float | None = Field(default=3600.0, ge=0)
    requests_per_second: float = 3.0
    max_retries: int = 4
    timeout_s: float = 30.0
    backoff_s: float = 1.0  # first retry pause; doubles per attempt (a Retry-After header wins)


class IngestConfig(Section):
    """Where documents come from; writes one JSONL of documents plus a rejects file."""

    source: Literal["jsonl", "folder", "riksdagen"] = "folder"
    input: Path | None = None  # a .jsonl(.gz) file or a folder, for those sources
    riksdagen: RiksdagenQuery = Field(default_factory=RiksdagenQuery)
    output: Path = Path("runs/default/documents.jsonl")
    rejects: Path = Path("runs/default/ingest_rejects.jsonl")
    max_chars: int = 2_000_000


# --- segment --------------------------------------------------------------------------------------------


class SegmentConfig(Section):
    """The sentence splitter; `input` is a documents JSONL (the ingest output)."""

    input: Path = Path("runs/default/documents.jsonl")
    output: Path = Path("runs/default/sentences.jsonl")
    rejects: Path = Path("runs/default/segment_rejects.jsonl")
    join_hard_wrapped_lines: bool = True
    detect_answer_structure: bool = True
    max_sentence_chars: int = 2000


# --- pretrain -------------------------------------------------------------------------------------------


class TokenizerConfig(Section):
    vocab_size: int = 16000
    min_frequency: int = 2
    lowercase: bool = False
    max_documents: int | None = None


class BackboneSize(Section):
    layers: int = 4
    hidden: int = 256
    heads: int = 4
    intermediate: int = 1024
    max_positions: int = 256


class PretrainConfig(Section):
    """Masked-LM pretraining: from scratch (tokenizer + small BERT) or continued from a checkpoint."""

    mode: Literal["scratch", "continue"] = "scratch"
    corpus: list[Path] = Field(default_factory=list)  # JSONL(.gz) with a `text` field, or .txt
    init_from: str | None = None  # for mode=continue: HF id or folder
    output_dir: Path = Path("runs/default/backbone")
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    size: BackboneSize = Field(default_factory=BackboneSize)
    block_size: int = 64
    batch_size: int = 128
    gradient_accumulation: int = Field(1, ge=1)  # batches per optimizer step (effective batch: batch_size x this)
    learning_rate: float = 1e-3
    warmup_fraction: float = 0.06
    weight_decay: float = 0.01
    mask_probability: float = 0.15
    max_steps: int = 1000
    max_minutes: float | None = None
    heldout_fraction: float = 0.02
    max_heldout_blocks: int = 512
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    shuffle_buffer: int = 10_000  # packed blocks held for shuffling (bounded memory)
    log_every: int = 20
    device: Literal["auto", "cpu"] = "auto"  # auto: CUDA (bf16 autocast) when present
    seed: int = 13
    threads: int | None = None


# --- train ----------------------------------------------------------------------------------------------


class MajoritySpec(Section):
    kind: Literal["majority"] = "majority"


class KeywordSpec(Section):
    kind: Literal["keyword"] = "keyword"
    lexicon: Path = Path("configs/lexicon.yaml")


class TfidfSpec(Section):
    """TF-IDF word + character n-grams, logistic regression per head.

    Defaults are the settings a document-grouped CV search on the gold train split chose (docs/results.md).
    """

    kind: Literal["tfidf"] = "tfidf"
    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (3, 6)
    min_df: int = 1
    C: float = 8.0
    strategy_C: float | None = 8.0
    class_weight: Literal["balanced"] | None = "balanced"
    max_features: int | None = 200_000
    context: bool = False  # neighbouring sentences as a separate, down-weighted bag of words
    context_weight: float = 0.5
    tune_thresholds: bool = True
    # >0: tune strategy thresholds on out-of-fold train predictions (dev stays unseen); 0: tune on dev
    threshold_folds: int = 5
    seed: int = 13


class BertSpec(Section):
    kind: Literal["bert"] = "bert"
    backbone: str = "KBLab/bert-base-swedish-cased"  # HF id or a folder (e.g. the pretrain output)
    context: bool = False  # previous + next sentence as a second segment
    max_length: int = 128
    epochs: int = 8
    batch_size: int = 16
    gradient_accumulation: int = 1
    learning_rate: float = 5e-5
    head_learning_rate: float | None = None
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    commitment_loss: Literal["weighted", "focal", "plain"] = "weighted"
    focal_gamma: float = 2.0
    strategy_pos_weight: bool = True
    dropout: float = 0.1
    early_stopping_patience: int = 3
    # without a validation set from the caller: share of training documents held out to pick the epoch and
    # the strategy thresholds (0: train every epoch, thresholds 0.5)
    validation_fraction: float = Field(0.1, ge=0, lt=1)
    tune_thresholds: bool = True
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    pooling: Literal["cls", "mean"] = "cls"  # sentence vector: [CLS] or the mean over the sentence's tokens
    layerwise_lr_decay: float = 1.0  # <1: lower layers learn slower (lr x decay^depth-from-top)
    max_tokens_per_batch: int = 8192  # prediction batches: length-sorted, capped by padded tokens
    seed: int = 13
    threads: int | None = None


# The built-in kinds: spec, pip requirements (beyond the pyfunc's base) and the model class.
model_kinds.register("majority", MajoritySpec, (), "pipeline.models.majority:MajorityModel")
model_kinds.register("keyword", KeywordSpec, (), "pipeline.models.keyword:KeywordModel")
model_kinds.register("tfidf", TfidfSpec, ("scikit-learn", "scipy", "skops"), "pipeline.models.tfidf:TfidfModel")
model_kinds.register(
    "bert", BertSpec, ("torch", "transformers", "tokenizers", "safetensors"), "pipeline.models.bert:BertTwoHeadModel"
)

# What an ensemble may hold: any single model (ensembles do not nest).
MemberSpec = model_kinds.spec_union(members_only=True)


class EnsembleSpec(Section):
    """Several models' probabilities combined into one model: by a stacker or by fixed weights.

    Nothing is chosen on the reported dev set. `fit` holds out `selection_fraction` of the training documents,
    fits the members on the rest (a member that trains in epochs picks its epoch on the held-out slice), and
    learns on the slice either a stacker (logistic regression on the members' probabilities, with temperature
    and strategy thresholds from its out-of-fold outputs), or mixing weights (`learned_weights`: the grid
    point with the best commitment macro-F1, the gate's metric) and the strategy thresholds of the mix, or,
    with fixed `weights`, only those thresholds. Cheap members (`refit`) then learn from every document.
    """

    kind: Literal["ensemble"] = "ensemble"
    members: list[MemberSpec] = Field(min_length=2)
    combiner: Literal["stacker", "learned_weights", "weights"] = "stacker"
    weights: list[float] | None = None  # combiner `weights`: one per member, normalised to sum to 1
    selection_fraction: float = Field(0.2, gt=0, lt=1)  # share of training documents the combiner learns on
    stacker_C: float = Field(1.0, gt=0)
    stacker_balanced: bool = True  # class-balanced stacker (for macro-F1); False: plain log-loss
    # kinds fitted again on all training documents once the combination is learned (cheap ones: the held-out
    # share costs TF-IDF about 0.03 macro-F1); the others keep the fit that the slice was held out from
    refit: list[str] = Field(default_factory=lambda: ["majority", "keyword", "tfidf"])
    tune_thresholds: bool = True
    # weighted mixes: a temperature per head fitted on the selection slice, so that a confidence of 0.8 is
    # right about 80% of the time (the stacker always fits its own); labels are unchanged by it
    calibrate: bool = True
    seed: int = 13

    @field_validator("weights")
    @classmethod
    def _normalised_weights(cls, weights: list[float] | None, info: ValidationInfo) -> list[float] | None:
        if weights is None:
            return None
        members = info.data.get("members")
        if members is not None and len(weights) != len(members):
            raise ValueError(f"{len(weights)} weight(s) for {len(members)} members; give one weight per member")
        if not all(w > 0 and math.isfinite(w) for w in weights):
            raise ValueError(f"every weight must be > 0 (got {weights})")
        total = sum(weights)
        return [w / total for w in weights]

    @model_validator(mode="before")
    @classmethod
    def _combiner_from_weights(cls, raw: Any) -> Any:
        """Without `combiner`, given weights mean fixed weights (the configs written before the stacker)."""
        if isinstance(raw, dict) and "combiner" not in raw:
            raw = {**raw, "combiner": "weights" if raw.get("weights") is not None else "stacker"}
        return raw

    @model_validator(mode="after")
    def _weights_for_weights(self) -> EnsembleSpec:
        if self.combiner == "weights" and self.weights is None:
            raise ValueError("combiner 'weights' needs `weights`, one per member")
        return self


model_kinds.register("ensemble", EnsembleSpec, (), "pipeline.models.ensemble:EnsembleModel", member=False)
ModelSpec = model_kinds.spec_union()


class TrainingSource(Section):
    """One labelled file, or the part of it whose fields equal `where`, with a training weight.

    A weight below 1 lets single-pass labels (silver) or sentences from adjacent pages count for less than the
    adjudicated gold sentences; a plain path in the config is a source with weight 1 and no filter.
    """

    path: Path
    where: dict[str, str | int | bool] = Field(default_factory=dict)
    weight: float = Field(1.0, gt=0, allow_inf_nan=False)
    # the weight of its sentences in the strategy head alone (None: `weight`); 0 for sources whose strategy
    # labels say little, e.g. adjacent pages that almost never carry one: they then teach commitment only
    strategy_weight: float | None = Field(None, ge=0, allow_inf_nan=False)
    # a share of the source's documents (whole documents, drawn with `seed`): for learning curves
    fraction: float = Field(1.0, gt=0, le=1)
    seed: int = 13
    name: str | None = None  # how the source is named in logs and MLflow datasets

    @property
    def label(self) -> str:
        """`name`, or the file's stem with the filter (`silver[source=adjacent]`)."""
        if self.name:
            return self.name
        condition = ",".join(f"{key}={value}" for key, value in self.where.items())
        if self.strategy_weight == 0:
            condition += f"{',' if condition else ''}commitment only"
        if self.fraction < 1:
            condition += f"{',' if condition else ''}fraction={self.fraction:g}"
        return f"{self.path.stem}[{condition}]" if condition else self.path.stem


class DataConfig(Section):
    """Labelled sentences (JSONL, see data/README.md): training sources and the dev set that is reported."""

    train: list[TrainingSource] = Field(
        default_factory=lambda: [TrainingSource(path=Path("data/sample/labelled/train.jsonl"))], min_length=1
    )
    dev: Path = Path("data/sample/labelled/dev.jsonl")

    @field_validator("train", mode="before")
    @classmethod
    def _paths_are_sources(cls, value: Any) -> Any:
        if isinstance(value, (str, Path)):
            value = [value]
        if isinstance(value, list):
            return [{"path": item} if isinstance(item, (str, Path)) else item for item in value]
        return value

    @property
    def train_files(self) -> list[Path]:
        """Every file the training sources read, once each, in order."""
        return list(dict.fromkeys(source.path for source in self.train))


class TrainConfig(Section):
    """Fits the main model (and, for comparison, the baselines) and saves each as a model folder."""

    model: ModelSpec = Field(default_factory=BertSpec)
    baselines: list[ModelSpec] = Field(default_factory=lambda: [TfidfSpec()])
    output_dir: Path = Path("runs/default/models")
    register_model: bool = True  # log as MLflow pyfunc and register a version with alias `challenger`


# --- evaluate -------------------------------------------------------------------------------------------


class EvaluateConfig(Section):
    """Scores saved models on a labelled set with the same harness."""

    models: list[Path] = Field(default_factory=list)  # empty: every model folder in train.output_dir
    data: Path | None = None  # empty: data.dev
    output_dir: Path = Path("runs/default/evaluation")
    bootstrap_samples: int = 1000
    calibration_bins: int = 10
    top_errors: int = 25
    seed: int = 13
    # the model folder every other model is compared with, paired over the same document resamples
    # (paired.md); None: no paired comparison
    reference: str | None = "baseline-tfidf"
    # strategy thresholds for every model: its own (as_trained), tuned on the scored data (dev: optimistic,
    # for comparing models under one rule only) or 0.5 (half)
    threshold_rule: Literal["as_trained", "dev", "half"] = "as_trained"


# --- label ----------------------------------------------------------------------------------------------


LABEL_OUTPUT_FORMATS = (".parquet", ".jsonl", ".csv")


class SparkConfig(Section):
    """Where and how the Spark engine runs; none of it changes the rows."""

    master: str = "local[*]"  # local[N], spark://host:7077, yarn, ...; ignored when spark-submit sets it
    partitions: int | None = Field(default=None, ge=1)  # labelling tasks; default: Spark's default parallelism
    batch_documents: int = Field(default=64, ge=1)  # documents per labelling call inside a task
    conf: dict[str, str] = Field(default_factory=dict)  # extra Spark settings, e.g. spark.executor.memory


class LabelConfig(Section):
    """Batch labelling of documents with a registered (or saved) model."""

    # "local": this process, streaming and resumable. "spark": the same labelling on Apache Spark
    # (pip install 'ct-policy-pipeline[spark]'; output: a Parquet dataset folder; docs/spark.md).
    engine: Literal["local", "spark"] = "local"
    spark: SparkConfig = Field(default_factory=SparkConfig)

    model: str = "models:/ct-sentence-labeller@champion"  # models:/ URI, runs:/ URI or a model folder
    input: Path = Path("runs/default/documents.jsonl")  # documents JSONL or a folder of files
    output: Path = Path("runs/default/labelled_sentences.parquet")  # .parquet, .jsonl or .csv
    rejects: Path | None = None  # default: <output>.rejects.jsonl
    # documents per committed chunk; larger chunks batch sentences with less padding
    chunk_documents: int = Field(default=256, ge=1)
    max_tokens_per_batch: int = Field(default=8192, ge=1)
    max_chars: int = Field(default=200_000, ge=1)
    overwrite: bool = False  # replace a finished output written with other arguments (--overwrite)
    # "auto": the fastest path stored with the BERT model that passed its agreement check when the model was
    # trained (ONNX Runtime int8 or float32, `inference.json` in the model folder); float32 with a one-line
    # notice where there is none or it cannot run here. "none": PyTorch float32. "dynamic-int8": int8 Linear
    # layers. "bf16": bfloat16 autocast (float32 where the CPU lacks bf16). These two are used only if, on the
    # first sentences labelled, they change at most quantize_max_disagreement of the labels float32 gives.
    quantize: Literal["auto", "none", "dynamic-int8", "bf16"] = "auto"
    quantize_max_disagreement: float = Field(default=0.02, ge=0.0, le=1.0)
    quantize_check_sentences: int = Field(default=256, ge=1)
    threads: int | None = None

    @field_validator("output")
    @classmethod
    def _known_format(cls, output: Path) -> Path:
        if output.suffix.lower() not in LABEL_OUTPUT_FORMATS:
            raise ValueError(
                f"unknown output format {output.suffix or '(no extension)'!r}; "
                f"use one of {', '.join(LABEL_OUTPUT_FORMATS)}"
            )
        return output


# --- pseudo_label ---------------------------------------------------------------------------------------


class PseudoLabelConfig(Section):
    """Pseudo-labels for self-training: a saved teacher labels unlabelled documents, and the sentences it is
    confident about on both heads are written as a labelled file (`data.train` takes it as a weighted source).

    Documents of every `exclude` file (and of `data.dev`, unless `exclude_dev` is false) are left out, so no
    labelled document (and nothing of the reported dev set) comes back as a pseudo-label. The teacher reads
    with `label.*`'s inference settings (quantize, threads, max_tokens_per_batch, max_chars) and the
    `segment.*` segmenter. The confidence rule is in `pipeline/pseudo_label.py` (and data/README.md).
    """

    corpus: list[Path] = Field(default_factory=list)  # documents JSONL(.gz) with `id` and `text`, or folders
    teacher: str = "runs/default/models/model"  # a saved model folder, models:/ or runs:/ URI
    exclude: list[Path] = Field(default_factory=list)  # labelled JSONL files whose `doc_id`s are left out
    exclude_dev: bool = True  # also leave out the documents of data.dev
    min_confidence: float = Field(0.9, ge=0, le=1)
    output: Path = Path("runs/default/pseudo.jsonl")  # labelled JSONL (.jsonl or .jsonl.gz)
    summary: Path | None = None  # default: <output stem>.summary.json beside the output
    rejects: Path | None = None  # default: <output stem>.rejects.jsonl beside the output
    source_name: str = Field("pseudo", min_length=1)  # the `source` field of every written sentence
    # at most this many sentences: commitment types take turns (a seeded random order within each type)
    max_sentences: int | None = Field(None, ge=1)
    seed: int = 13
    chunk_documents: int = Field(64, ge=1)  # documents labelled per batch (memory stays flat)

    @field_validator("corpus", "exclude", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, (str, Path)) else value

    @field_validator("output")
    @classmethod
    def _labelled_jsonl(cls, output: Path) -> Path:
        if not output.name.endswith((".jsonl", ".jsonl.gz")):
            raise ValueError("the pseudo-labels are a labelled JSONL file; name it .jsonl or .jsonl.gz")
        return output


# --- serve ----------------------------------------------------------------------------------------------


class ServeConfig(Section):
    """The REST server (`ct-pipeline serve`): MLflow's scoring server for one registered model."""

    model: str | None = None  # models:/ URI, runs:/ URI or a logged model folder; empty: label.model
    host: str = "127.0.0.1"  # loopback; expose it deliberately (and behind a proxy) if at all
    port: int = Field(default=5000, ge=1, le=65535)
    # Larger requests get 413 unread. A long answer is ~50 KB of JSON; 4 MiB is a batch of many.
    max_request_bytes: int = Field(default=4 * 1024 * 1024, ge=1)


# --- retrain --------------------------------------------------------------------------------------------


class RetrainConfig(Section):
    """The promotion gate for scheduled retraining."""

    metric: str = "commitment_macro_f1"
    margin: float = 0.005
    tolerance: float = 0.01  # a challenger may lose at most this much on any head's macro-F1
    eval_data: Path | None = None  # the frozen evaluation set; empty: data.dev
    state_file: Path = Path("runs/retrain_state.json")
    report: Path = Path("runs/default/retrain_report.md")
    force: bool = False


# --- study ----------------------------------------------------------------------------------------------


class StudyVariant(Section):
    """One variant of a study: `--set`-style overrides of the study's own config."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.+-]+$")
    description: str = ""
    set: list[str] = Field(default_factory=list)


class StudyConfig(Section):
    """`ct-pipeline study`: variants trained on their own data and compared on dev (docs/results.md)."""

    reference: str  # the variant every other is compared with (paired bootstrap)
    variants: list[StudyVariant] = Field(min_length=1)
    table: Path = Path("runs/study/table.md")  # the generated Markdown table
    # share of the documents of the study config's first training source (gold train) held out from every
    # variant and scored as the selection set: the study's winner is chosen there, never on dev (0: off)
    selection_fraction: float = Field(0.2, ge=0, lt=1)
    selection_seed: int = 13

    @model_validator(mode="after")
    def _known_reference(self) -> StudyConfig:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names repeat: {names}")
        if self.reference not in names:
            raise ValueError(f"reference {self.reference!r} is not one of the variants {names}")
        return self


# --- tracking -------------------------------------------------------------------------------------------


class TrackingConfig(Section):
    """MLflow: an embedded sqlite store by default; `MLFLOW_TRACKING_URI` wins over `uri`."""

    uri: str = "sqlite:///runs/mlflow.db"
    artifact_location: Path = Path("runs/mlartifacts")
    experiment: str | None = None  # default: the config file's stem
    registered_model: str = "ct-sentence-labeller"
    log_system_metrics: bool = True


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
