"""What is trained, and on what: the model specs of every kind, the training sources and the `data` and
`train` sections of a config.

Each built-in model kind is registered here with its spec (`pipeline.model_kinds`), so the config's model
unions, the factory, loading and the pyfunc's requirements all know it; an ensemble holds any single kind.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from pipeline import model_kinds
from pipeline.config_sections import Section

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
    # the whole document's bag of words: for both heads, and for strategy once more scaled by the chance that
    # the sentence reports a commitment (0: off; docs/results.md, "Document context")
    document_weight: float = Field(0.0, ge=0)
    gated_document_weight: float = Field(0.0, ge=0)
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
    point with the best commitment macro-F1, the gate's metric, and with `per_head_weights` a second set for
    strategy, the grid point with the best strategy macro-F1) and the strategy thresholds of the mix, or,
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
    # right about 80% of the time (the stacker always fits its own); commitment labels are unchanged by it,
    # strategy thresholds are tuned on the scaled probabilities
    calibrate: bool = True
    # learned_weights: strategy learns its own mixing weights (a member can be good at one head only); off by
    # default: it won on the study's selection set but lost 0.024 strategy on dev in the retrain (results.md)
    per_head_weights: bool = False
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
