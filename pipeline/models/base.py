"""The one interface every sentence model implements (majority, keyword, TF-IDF, BERT).

Evaluation, the registry, labelling and retraining only ever hold a `SentenceModel`, so they never ask which
model it is. A saved model is a folder with `model.json` naming its kind; `load_model` dispatches on it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, Self, runtime_checkable

from pipeline.schema import COMMITMENT_LABELS, STRATEGY_LABELS, HeadProbabilities, LabelledSentence, SentenceText

MODEL_CARD_FILE = "model.json"


@runtime_checkable
class SentenceModel(Protocol):
    """Configured in the constructor, learns in `fit`, answers in `predict_proba`; no I/O except save/load."""

    kind: str

    def fit(self, train: Sequence[LabelledSentence], dev: Sequence[LabelledSentence] | None = None) -> Self: ...

    def predict_proba(self, sentences: Sequence[SentenceText]) -> HeadProbabilities: ...

    def save(self, path: Path) -> None: ...

    @classmethod
    def load(cls, path: Path) -> Self: ...


_KINDS: dict[str, Callable[[], type]] = {}


def register_kind(kind: str, loader: Callable[[], type]) -> None:
    """Make `load_model` know a model kind; `loader` imports lazily so torch is only loaded when needed."""
    _KINDS[kind] = loader


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
    from pipeline import models  # noqa: F401  (registers the built-in kinds)

    path = Path(path)
    kind = read_model_json(path)["kind"]
    if kind not in _KINDS:
        raise ValueError(f"{path}: unknown model kind {kind!r}; known: {sorted(_KINDS)}")
    return _KINDS[kind]().load(path)
