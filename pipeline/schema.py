"""The domain's types: documents, sentences, the label scheme and model outputs.

Every stage speaks these types, so the label sets are defined exactly once, here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

# Order matters: it is the column order of every probability matrix.
STRATEGY_LABELS: tuple[str, ...] = ("forebygga", "forhindra", "forsvara")
# Order matters twice: column order, and the precedence rule of the annotation scheme
# (when several commitment types apply, the first in this order wins).
COMMITMENT_LABELS: tuple[str, ...] = ("funding", "pending_proposal", "support", "institution", "none")

# Column names of both heads' probabilities in every labelled table (batch labelling, the pyfunc, review).
STRATEGY_PROBABILITY_COLUMNS: tuple[str, ...] = tuple(f"p_{label}" for label in STRATEGY_LABELS)
COMMITMENT_PROBABILITY_COLUMNS: tuple[str, ...] = tuple(f"p_{label}" for label in COMMITMENT_LABELS)

SentenceRole = Literal["heading", "question", "body", "closing", "dateline", "signature"]


class Document(BaseModel):
    """One input text (an answer, a speech, a press release) before segmentation."""

    model_config = ConfigDict(extra="forbid")

    id: str
    text: str
    title: str | None = None
    date: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class Sentence(BaseModel):
    """A sentence cut from a document.

    `start`/`end` index the original document text (`Document.text`, as the input file holds it), so
    `document.text[start:end]` is the passage; `text` is that passage cleaned (soft hyphens, odd spaces and
    hard wraps removed), as the model read it.
    """

    model_config = ConfigDict(extra="forbid")

    doc_id: str
    index: int
    start: int
    end: int
    text: str
    role: SentenceRole = "body"
    forced: bool = False  # a piece of an over-long sentence, cut by force at segment.max_sentence_chars


class LabelledSentence(BaseModel):
    """A human-labelled sentence (the format of `gold/*.jsonl` and `data/sample/labelled/*.jsonl`)."""

    model_config = ConfigDict(extra="allow")

    id: str
    doc_id: str
    text: str
    strategy: list[str]
    commitment: str
    sentence_index: int | None = None
    # how much the sentence counts in training; set from the data source's `weight` (None: 1), never a label
    weight: float | None = None
    # its weight in the strategy head alone, from the source's `strategy_weight` (None: `weight`); 0: the
    # sentence's strategy labels are not used, neither for training nor for tuning thresholds
    strategy_weight: float | None = None

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: list[str]) -> list[str]:
        unknown = [label for label in value if label not in STRATEGY_LABELS]
        if unknown:
            raise ValueError(f"unknown strategy label(s) {unknown}; expected a subset of {list(STRATEGY_LABELS)}")
        if len(set(value)) != len(value):
            raise ValueError(f"strategy labels repeated: {value}")
        return value

    @field_validator("commitment")
    @classmethod
    def _known_commitment(cls, value: str) -> str:
        if value not in COMMITMENT_LABELS:
            raise ValueError(f"unknown commitment label {value!r}; expected one of {list(COMMITMENT_LABELS)}")
        return value


@dataclass(frozen=True)
class SentenceText:
    """What a model reads: the sentence and, for context models, its neighbours and its whole document.

    `document` is every sentence of the document joined (the same string object for all of them, so it costs
    one copy per document); models that read the document's vocabulary use it, the others ignore it.
    """

    text: str
    previous: str = ""
    next: str = ""
    document: str = ""


def with_context(texts_by_doc: Iterable[tuple[str, str]]) -> list[SentenceText]:
    """Attach neighbours and the document's text to (doc_id, text) pairs given in document order; neither
    ever crosses documents."""
    pairs = list(texts_by_doc)
    sentences_of: dict[str, list[str]] = {}
    for doc_id, text in pairs:
        sentences_of.setdefault(doc_id, []).append(text)
    documents = {doc_id: " ".join(texts) for doc_id, texts in sentences_of.items()}
    out: list[SentenceText] = []
    for i, (doc_id, text) in enumerate(pairs):
        prev = pairs[i - 1][1] if i > 0 and pairs[i - 1][0] == doc_id else ""
        nxt = pairs[i + 1][1] if i + 1 < len(pairs) and pairs[i + 1][0] == doc_id else ""
        out.append(SentenceText(text=text, previous=prev, next=nxt, document=documents[doc_id]))
    return out


def strategy_matrix(rows: Sequence[Sequence[str]]) -> np.ndarray:
    """Multi-hot matrix (n, 3) in STRATEGY_LABELS order."""
    m = np.zeros((len(rows), len(STRATEGY_LABELS)), dtype=np.int64)
    for i, labels in enumerate(rows):
        for label in labels:
            m[i, STRATEGY_LABELS.index(label)] = 1
    return m


def commitment_indices(labels: Sequence[str]) -> np.ndarray:
    """Class indices (n,) in COMMITMENT_LABELS order."""
    return np.array([COMMITMENT_LABELS.index(label) for label in labels], dtype=np.int64)


@dataclass
class HeadProbabilities:
    """Both heads' outputs for n sentences.

    `strategy` is (n, 3) independent sigmoid probabilities; `commitment` is (n, 5) and sums to 1 per row;
    `strategy_thresholds` (3,) turns strategy probabilities into labels; `truncated` (n,) is True where the
    sentence itself was cut to fit the model (context that did not fit never counts). Default: none cut.
    """

    strategy: np.ndarray
    commitment: np.ndarray
    strategy_thresholds: np.ndarray = field(default_factory=lambda: np.full(len(STRATEGY_LABELS), 0.5))
    truncated: np.ndarray = None  # type: ignore[assignment]  (filled in __post_init__)

    def __post_init__(self) -> None:
        if self.truncated is None:
            self.truncated = np.zeros(len(self.commitment), dtype=bool)
        else:
            self.truncated = np.asarray(self.truncated, dtype=bool)
            if self.truncated.shape != (len(self.commitment),):
                raise ValueError(
                    f"HeadProbabilities: truncated has shape {self.truncated.shape}, expected ({len(self.commitment)},)"
                )

    def rows(self, index: np.ndarray | slice) -> HeadProbabilities:
        """The same outputs for a subset (or reordering) of the sentences."""
        return HeadProbabilities(
            self.strategy[index], self.commitment[index], self.strategy_thresholds, self.truncated[index]
        )

    def decide(self) -> Decisions:
        return decide(self)

    def strategy_labels(self) -> list[list[str]]:
        return self.decide().strategy_labels()

    def commitment_labels(self) -> list[str]:
        return self.decide().commitment_labels()


@dataclass(frozen=True)
class Decisions:
    """Labels decided from probabilities: strategy hits (n, 3) bool and the commitment class index (n,)."""

    strategy: np.ndarray
    commitment: np.ndarray

    def strategy_labels(self) -> list[list[str]]:
        return [[STRATEGY_LABELS[j] for j in np.flatnonzero(row)] for row in self.strategy]

    def commitment_labels(self) -> list[str]:
        return [COMMITMENT_LABELS[j] for j in self.commitment]


def decide(probs: HeadProbabilities) -> Decisions:
    """The one decision rule: commitment is the most probable type; a strategy label is set when its
    probability is at or above its threshold."""
    strategy = probs.strategy >= np.asarray(probs.strategy_thresholds)[None, :]
    commitment = probs.commitment.argmax(axis=1) if len(probs.commitment) else np.zeros(0, dtype=np.int64)
    return Decisions(strategy=strategy, commitment=commitment)


# --- the labelled sentence row ---------------------------------------------------------------------------
# One definition of what batch labelling, the pyfunc, the REST server and the review notebooks read and
# write; the Arrow schema and the MLflow signature are derived from it.

# Who answered, when, and about what: on every sentence row and every summary row, each its own column
# (None where the document does not say); `pipeline.segment.document_facts` reads them from a document.
DOCUMENT_FACTS: tuple[tuple[str, type], ...] = (
    ("title", str),
    ("date", str),  # ISO date
    ("minister", str),
    ("question_title", str),  # the titles of the questions answered, "; "-joined
)

LABELLED_ROW: tuple[tuple[str, type], ...] = (
    ("doc_id", str),
    *DOCUMENT_FACTS,
    ("index", int),
    ("start", int),  # offsets into the original document text (for bare sentences: 0 and len(text))
    ("end", int),
    ("role", str),
    ("text", str),
    ("strategy", list),  # the strategy labels set (a list of strings; empty when none)
    *((column, float) for column in STRATEGY_PROBABILITY_COLUMNS),
    ("commitment", str),
    *((column, float) for column in COMMITMENT_PROBABILITY_COLUMNS),
    ("truncated", bool),  # the model read only the first part of the sentence
    ("model_name", str),
    ("model_version", str),
)
LABELLED_ROW_COLUMNS: tuple[str, ...] = tuple(name for name, _ in LABELLED_ROW)

# One row per labelled document: counts per label, with the document's own metadata.
LABELLED_DOCUMENT: tuple[tuple[str, type], ...] = (
    ("doc_id", str),
    *DOCUMENT_FACTS,
    ("sentences", int),
    *((f"strategy_{label}", int) for label in STRATEGY_LABELS),
    ("strategy_none", int),  # sentences with no strategy dimension
    *((f"commitment_{label}", int) for label in COMMITMENT_LABELS),
    ("truncated", bool),  # the document was over label.max_chars and cut
    ("truncated_sentences", int),
    ("metadata", str),  # all of the document's metadata, as a JSON object (keys sorted)
    ("model_name", str),
    ("model_version", str),
)


def arrow_schema(row: Sequence[tuple[str, type]]) -> Any:
    """The Arrow schema of a row definition (a `pyarrow.Schema`)."""
    import pyarrow as pa

    types = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_(), list: pa.list_(pa.string())}
    return pa.schema([(name, types[kind]) for name, kind in row])
