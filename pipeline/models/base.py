"""The one interface every sentence model implements (majority, keyword, TF-IDF, BERT).

Evaluation, the registry, labelling and retraining only ever hold a `SentenceModel`, so they never ask which
model it is. A saved model is a folder with `model.json` naming its kind; `load_model` dispatches on it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, Self, runtime_checkable

from pipeline.schema import HeadProbabilities, LabelledSentence, SentenceText

MODEL_CARD_FILE = "model.json"


@runtime_checkable
class SentenceModel(Protocol):
    """Configured in the constructor, learns in `fit`, answers in `predict_proba`; no I/O except save/load."""

    kind: str

    def fit(
        self, train: Sequence[LabelledSentence], dev: Sequence[LabelledSentence] | None = None
    ) -> Self: ...

    def predict_proba(self, sentences: Sequence[SentenceText]) -> HeadProbabilities: ...

    def save(self, path: Path) -> None: ...

    @classmethod
    def load(cls, path: Path) -> Self: ...


_KINDS: dict[str, Callable[[], type]] = {}


def register_kind(kind: str, loader: Callable[[], type]) -> None:
    """Make `load_model` know a model kind; `loader` imports lazily so torch is only loaded when needed."""
    _KINDS[kind] = loader


def write_model_json(path: Path, kind: str, **extra: Any) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / MODEL_CARD_FILE).write_text(json.dumps({"kind": kind, **extra}, indent=2, ensure_ascii=False))


def read_model_json(path: Path) -> dict[str, Any]:
    card = Path(path) / MODEL_CARD_FILE
    if not card.is_file():
        raise FileNotFoundError(f"{path}: not a saved model folder (no {MODEL_CARD_FILE})")
    return json.loads(card.read_text())


def load_model(path: Path | str) -> SentenceModel:
    """Load any saved model folder, whatever its kind."""
    from pipeline import models  # noqa: F401  (registers the built-in kinds)

    path = Path(path)
    kind = read_model_json(path)["kind"]
    if kind not in _KINDS:
        raise ValueError(f"{path}: unknown model kind {kind!r}; known: {sorted(_KINDS)}")
    return _KINDS[kind]().load(path)
