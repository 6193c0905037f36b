"""The one interface every sentence model implements (majority, keyword, TF-IDF, BERT, ensemble).

Evaluation, the registry, labelling and retraining only ever hold a `SentenceModel`, so they never ask which
model it is. A saved model is a folder with `model.json` naming its kind; `load_model` dispatches on it
through the registry of kinds (`pipeline.model_kinds`).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Self, runtime_checkable

from pipeline import model_kinds
from pipeline.schema import (
    COMMITMENT_LABELS,
    STRATEGY_LABELS,
    HeadProbabilities,
    LabelledSentence,
    SentenceText,
    decide,
)

MODEL_CARD_FILE = "model.json"

# Receives (epoch, metrics) after every epoch of a model that trains in epochs; others never call it.
EpochCallback = Callable[[int, Mapping[str, float]], None]


@runtime_checkable
class SentenceModel(Protocol):
    """Configured in the constructor, learns in `fit`, answers in `predict_proba`; no I/O except save/load.

    `predict_proba` flags in `truncated` the sentences the model read only in part. `configure_inference`
    sets how predictions run (precision, threads); `precisions` lists what the kind can run in.
    """

    kind: str
    precisions: tuple[str, ...]

    def fit(
        self,
        train: Sequence[LabelledSentence],
        dev: Sequence[LabelledSentence] | None = None,
        *,
        callbacks: Sequence[EpochCallback] = (),
    ) -> Self: ...

    def predict_proba(self, sentences: Sequence[SentenceText]) -> HeadProbabilities: ...

    def configure_inference(self, precision: str = "float32", threads: int | None = None, **options: Any) -> None: ...

    def inference_report(self) -> InferenceReport: ...

    def prepare_inference(self, folder: Path, dev: Sequence[LabelledSentence]) -> list[dict[str, Any]]:
        """Build and check faster inference paths for the model saved in `folder` (labels on `dev` compared
        with float32); returns the inference cards written (none for a kind without such paths)."""
        ...

    def save(self, path: Path) -> None: ...

    @classmethod
    def load(cls, path: Path) -> Self: ...


@dataclass(frozen=True)
class InferenceReport:
    """What predictions ran in, and how far their labels were from float32 on the check sample (if checked)."""

    precision: str = "float32"
    disagreement: float | None = None


class QuantizationOutOfTolerance(RuntimeError):
    """A lower precision changes more labels than allowed compared with float32."""


class Float32Inference:
    """`configure_inference` for kinds that only run in float32: other precisions are refused."""

    precisions: tuple[str, ...] = ("float32",)

    def configure_inference(self, precision: str = "float32", threads: int | None = None, **options: Any) -> None:
        """Accept float32 (threads and batching options do not apply); refuse any other precision."""
        if precision != "float32":
            kind = getattr(self, "kind", type(self).__name__)
            raise ValueError(f"{kind} model: precision {precision!r} is not available; it runs in float32 only")

    def inference_report(self) -> InferenceReport:
        return InferenceReport()

    def prepare_inference(self, folder: Path, dev: Sequence[LabelledSentence]) -> list[dict[str, Any]]:
        """No faster path to build: float32 is the only one."""
        return []


class SinglePassModel(Float32Inference, ABC):
    """A kind that learns in one pass over the training sentences (majority, keyword rules, TF-IDF): no epochs,
    so `callbacks` are never called, and float32 only. Subclasses learn in `_fit`, on a non-empty train set."""

    def fit(
        self,
        train: Sequence[LabelledSentence],
        dev: Sequence[LabelledSentence] | None = None,
        *,
        callbacks: Sequence[EpochCallback] = (),
    ) -> Self:
        if not train:
            raise ValueError(f"{type(self).__name__}.fit: no training sentences")
        return self._fit(train, dev)

    @abstractmethod
    def _fit(self, train: Sequence[LabelledSentence], dev: Sequence[LabelledSentence] | None) -> Self: ...


def check_fitted(model: object, attribute: str) -> None:
    """Refuse to predict or save before `fit` or `load` has set `attribute`."""
    if not hasattr(model, attribute):
        raise RuntimeError(f"{type(model).__name__} is not fitted: call fit() or load() first")


def label_disagreement(a: HeadProbabilities, b: HeadProbabilities) -> float:
    """Share of sentences whose commitment label or strategy label set differs between two predictions."""
    if len(a.commitment) == 0:
        return 0.0
    first, second = decide(a), decide(b)  # the one decision rule
    differ = (first.commitment != second.commitment) | (first.strategy != second.strategy).any(axis=1)
    return float(differ.mean())


def write_model_json(path: Path, kind: str, **extra: Any) -> None:
    """Write the folder's `model.json`: its kind, the label lists its outputs are ordered by, and `extra`."""
    path.mkdir(parents=True, exist_ok=True)
    card = {
        "kind": kind,
        "commitment_labels": list(COMMITMENT_LABELS),
        "strategy_labels": list(STRATEGY_LABELS),
        **extra,
    }
    (path / MODEL_CARD_FILE).write_text(json.dumps(card, indent=2, ensure_ascii=False))


def read_model_json(path: Path, kind: str | None = None) -> dict[str, Any]:
    """Read `model.json`; refuse a folder of another kind or one saved under a different label scheme.

    The label check matters because probability columns are positional: a model saved when the scheme had
    other labels (or another order) would otherwise label silently wrong.
    """
    card_path = Path(path) / MODEL_CARD_FILE
    if not card_path.is_file():
        raise FileNotFoundError(f"{path}: not a saved model folder (no {MODEL_CARD_FILE})")
    card = json.loads(card_path.read_text())
    if kind is not None and card.get("kind") != kind:
        raise ValueError(f"{path}: {MODEL_CARD_FILE} kind is {card.get('kind')!r}, expected {kind!r}")
    for key, labels in (("commitment_labels", COMMITMENT_LABELS), ("strategy_labels", STRATEGY_LABELS)):
        if tuple(card.get(key, labels)) != labels:
            raise ValueError(f"{path}: saved {key} {card.get(key)} differ from this version's {list(labels)}")
    return card


def load_model(path: Path | str) -> SentenceModel:
    """Load any saved model folder, whatever its kind."""
    import pipeline.training_config  # noqa: F401  (registers the built-in kinds)

    path = Path(path)
    kind = read_model_json(path)["kind"]
    try:
        registered = model_kinds.get(kind)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return registered.model_class().load(path)


def build_model(spec: Any) -> SentenceModel:
    """An unfitted model for a spec from the config (`spec.kind` picks the registered class)."""
    return model_kinds.get(spec.kind).model_class().from_spec(spec)
