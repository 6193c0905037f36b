"""The sections of a config file that are not about training: where documents come from, how they are
segmented, the backbone's pretraining, evaluation, labelling, serving, retraining, the study and the MLflow
store. Each is a pydantic model that refuses unknown keys, so a typo in a config is an error, not a default.
(The training sections are in `pipeline.training_config`; loading a whole file is `pipeline.config`.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Section(BaseModel):
    """One section of a config: unknown keys are refused."""

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
    distinct_texts: bool = True  # a sentence text is kept once (its first occurrence), not once per page
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
    # >= 2: also score every variant by document-grouped k-fold cross-validation over all documents of that
    # source (k more fits per variant; each fold is predicted by the variant fitted on everything else), and
    # make the study's pick there: a larger, steadier selection set than the held-out share. 0: off
    cv_folds: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _known_reference(self) -> StudyConfig:
        if self.cv_folds == 1:
            raise ValueError("cv_folds: 1 fold cannot hold anything out; use 0 (off) or 2 or more")
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
