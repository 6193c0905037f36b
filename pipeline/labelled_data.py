"""Labelled sentences on disk: validation with line numbers, document-grouped splits, HF `datasets`.

The format (see data/README.md): JSONL, one sentence per line with `id`, `doc_id`, `text`, `strategy` (list),
`commitment`, and optional context fields (`sentence_index`, `category`, `year`, ...). Training refuses a file
with any bad line, and every split the project makes itself keeps a document whole, so that sentences of one
document never sit on both sides of an evaluation.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ValidationError

from pipeline.io.jsonl import BadLine, read_jsonl
from pipeline.schema import LabelledSentence, SentenceText, with_context
from pipeline.training_config import TrainingSource

if TYPE_CHECKING:
    import datasets


@dataclass(frozen=True)
class DataProblem:
    """One bad line (or, with line 0, a problem of the whole file)."""

    source: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.message}" if self.line else f"{self.source}: {self.message}"


class LabelledDataError(ValueError):
    """Labelled data that training must refuse; `problems` lists every bad line."""

    def __init__(self, problems: Sequence[DataProblem], shown: int = 20) -> None:
        self.problems = list(problems)
        lines = [str(p) for p in self.problems[:shown]]
        if len(self.problems) > shown:
            lines.append(f"... and {len(self.problems) - shown} more")
        super().__init__(f"{len(self.problems)} problem(s) in labelled data:\n" + "\n".join(lines))


def _describe(error: ValidationError) -> list[str]:
    out = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"]) or "line"
        if item["type"] == "missing":
            out.append(f"missing field {field!r}")
        else:
            # the schema's own validators already name the unknown label and the allowed set
            message = str(item["msg"]).removeprefix("Value error, ")
            out.append(f"field {field!r}: {message}")
    return out


Numbered = list[tuple[int, LabelledSentence]]


def _parse_numbered(records: Iterable[tuple[int, Any]], source: str) -> tuple[Numbered, list[DataProblem]]:
    good: list[tuple[int, LabelledSentence]] = []
    problems: list[DataProblem] = []
    first_line_of: dict[str, int] = {}
    for number, record in records:
        if isinstance(record, BadLine):
            problems.append(DataProblem(source, number, f"bad JSON: {record.reason}"))
            continue
        if not isinstance(record, dict):
            message = f"expected a JSON object, got {type(record).__name__}"
            problems.append(DataProblem(source, number, message))
            continue
        try:
            sentence = LabelledSentence.model_validate(record)
        except ValidationError as exc:
            problems.extend(DataProblem(source, number, m) for m in _describe(exc))
            continue
        if not sentence.text.strip():
            problems.append(DataProblem(source, number, "field 'text' is empty"))
            continue
        if sentence.id in first_line_of:
            first = first_line_of[sentence.id]
            message = f"duplicate id {sentence.id!r} (first on line {first})"
            problems.append(DataProblem(source, number, message))
            continue
        first_line_of[sentence.id] = number
        good.append((number, sentence))
    return good, problems


def _read_numbered(path: Path) -> tuple[Numbered, list[DataProblem]]:
    if not path.is_file():
        return [], [DataProblem(str(path), 0, "file not found")]
    return _parse_numbered(read_jsonl(path), str(path))


def check_labelled_file(path: Path | str) -> tuple[list[LabelledSentence], list[DataProblem]]:
    """Read and check one labelled JSONL file without raising on bad lines."""
    good, problems = _read_numbered(Path(path))
    return [sentence for _, sentence in good], problems


def _source(item: Path | str | TrainingSource) -> TrainingSource:
    return item if isinstance(item, TrainingSource) else TrainingSource(path=Path(item))


def _selected(sentence: LabelledSentence, where: Mapping[str, Any]) -> bool:
    if not where:
        return True
    fields = sentence.model_dump()
    return all(key in fields and fields[key] == value for key, value in where.items())


def _document_share(numbered: Numbered, fraction: float, seed: int) -> Numbered:
    """A seeded share of the documents (at least one), each kept whole; a smaller share is a subset of a larger."""
    documents = sorted({s.doc_id for _, s in numbered})
    order = np.random.default_rng(seed).permutation(len(documents))
    kept = {documents[i] for i in order[: max(1, round(fraction * len(documents)))]}
    return [(line, s) for line, s in numbered if s.doc_id in kept]


def check_splits(
    splits: Mapping[str, Sequence[Path | str | TrainingSource]],
) -> tuple[dict[str, list[LabelledSentence]], list[DataProblem]]:
    """Check several named splits (e.g. {"train": [a, b], "dev": [c]}) together.

    An entry is a file or a `TrainingSource` (a file's sentences whose fields equal `where`, with a weight that
    each selected sentence carries). Beyond each file's own checks: an id may appear only once over all
    sources, a source must select something, and a document may belong to only one split (several files of
    the same split may share a document).
    """
    out: dict[str, list[LabelledSentence]] = {}
    problems: list[DataProblem] = []
    id_seen: dict[str, str] = {}
    doc_split: dict[str, tuple[str, str]] = {}
    files: dict[Path, Numbered] = {}
    for split, entries in splits.items():
        out[split] = []
        for source in map(_source, entries):
            path = source.path
            if path not in files:
                files[path], file_problems = _read_numbered(path)
                problems.extend(file_problems)
            chosen = [(line, s) for line, s in files[path] if _selected(s, source.where)]
            if files[path] and not chosen:
                message = f"source {source.label!r}: no sentence has {source.where}"
                problems.append(DataProblem(str(path), 0, message))
            if source.fraction < 1:
                chosen = _document_share(chosen, source.fraction, source.seed)
            for line, sentence in chosen:
                if sentence.id in id_seen:
                    message = f"duplicate id {sentence.id!r} (also in {id_seen[sentence.id]})"
                    problems.append(DataProblem(str(path), line, message))
                    continue
                id_seen[sentence.id] = f"{path}, source {source.label!r}"
                owner_split, owner_file = doc_split.setdefault(sentence.doc_id, (split, str(path)))
                if owner_split != split:
                    message = (
                        f"document {sentence.doc_id!r} is in split {split!r} and also in split "
                        f"{owner_split!r} ({owner_file}); a document must stay in one split"
                    )
                    problems.append(DataProblem(str(path), line, message))
                    continue
                update: dict[str, float] = {} if source.weight == 1.0 else {"weight": source.weight}
                if source.strategy_weight is not None:
                    update["strategy_weight"] = source.strategy_weight
                weighted = sentence.model_copy(update=update) if update else sentence
                out[split].append(weighted)
    return out, problems


def training_weights(sentences: Sequence[LabelledSentence], head: str = "commitment") -> np.ndarray:
    """Each sentence's training weight in `head` ("commitment" or "strategy"; 1 where its source gave none)."""
    if head not in ("commitment", "strategy"):
        raise ValueError(f"training_weights: head {head!r}, expected 'commitment' or 'strategy'")
    weights = np.array([1.0 if s.weight is None else s.weight for s in sentences])
    if head == "strategy":
        own = [s.strategy_weight for s in sentences]
        weights = np.array([w if o is None else o for w, o in zip(weights, own, strict=True)], dtype=float)
    return weights


def strategy_labelled(sentences: Sequence[LabelledSentence]) -> np.ndarray:
    """(n,) bool: whether a sentence's strategy labels count (its strategy weight is above 0)."""
    return np.array([s.strategy_weight is None or s.strategy_weight > 0 for s in sentences], dtype=bool)


def validate_files(paths: Sequence[Path | str]) -> list[DataProblem]:
    """`pipeline validate-data`: check files as separate splits (each file's lines, ids unique over all
    files, no document in two files). An empty list means the data is fit for training."""
    _, problems = check_splits({str(path): [path] for path in paths})
    return problems


def read_labelled(path: Path | str) -> list[LabelledSentence]:
    """Read one labelled JSONL file; raise `LabelledDataError` listing every bad line."""
    sentences, problems = check_labelled_file(path)
    if problems:
        raise LabelledDataError(problems)
    if not sentences:
        raise LabelledDataError([DataProblem(str(path), 0, "no labelled sentences")])
    return sentences


def read_training_data(
    train: Sequence[Path | str | TrainingSource], dev: Path | str | None = None
) -> tuple[list[LabelledSentence], list[LabelledSentence] | None]:
    """Read train files (and optionally dev) for training.

    Refuses (raises `LabelledDataError`) any bad line, a duplicate id, or a document in both splits.
    """
    splits: dict[str, Sequence[Path | str | TrainingSource]] = {"train": list(train)}
    if dev is not None:
        splits["dev"] = [dev]
    data, problems = check_splits(splits)
    if problems:
        raise LabelledDataError(problems)
    for split, sentences in data.items():
        if not sentences:
            where = ", ".join(str(_source(entry).path) for entry in splits[split])
            raise LabelledDataError([DataProblem(where, 0, f"split {split!r} is empty")])
    return data["train"], data.get("dev")


def write_labelled(sentences: Iterable[LabelledSentence], path: Path | str) -> Path:
    """Write sentences as JSONL (the same format `read_labelled` reads)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for sentence in sentences:
            handle.write(json.dumps(sentence.model_dump(exclude_none=True), ensure_ascii=False) + "\n")
    return path


# --- document order and model inputs ------------------------------------------------------------------


def in_document_order(sentences: Sequence[LabelledSentence]) -> list[LabelledSentence]:
    """Sort by (doc_id, sentence_index); without an index a sentence keeps its input position."""

    def key(i: int) -> tuple[str, int, int]:
        index = sentences[i].sentence_index
        return (sentences[i].doc_id, index if index is not None else i, i)

    return [sentences[i] for i in sorted(range(len(sentences)), key=key)]


def sentence_texts(sentences: Sequence[LabelledSentence]) -> list[SentenceText]:
    """Model inputs with neighbours; pass sentences already in document order (see `in_document_order`)."""
    return with_context((s.doc_id, s.text) for s in sentences)


# --- document-grouped splits --------------------------------------------------------------------------


def grouped_split(
    sentences: Sequence[LabelledSentence], dev_fraction: float = 0.2, seed: int = 13
) -> tuple[list[LabelledSentence], list[LabelledSentence]]:
    """Split into (train, dev) by document: no document has sentences on both sides."""
    from sklearn.model_selection import GroupShuffleSplit

    n_docs = len({s.doc_id for s in sentences})
    if n_docs < 2:
        raise ValueError("a grouped split needs at least two documents")
    # a whole number of documents, and at least one on each side (a fraction could round to all or none)
    dev_docs = min(max(round(dev_fraction * n_docs), 1), n_docs - 1)
    splitter = GroupShuffleSplit(n_splits=1, test_size=dev_docs, random_state=seed)
    groups = [s.doc_id for s in sentences]
    train_idx, dev_idx = next(splitter.split(np.zeros(len(sentences)), groups=groups))
    return [sentences[i] for i in train_idx], [sentences[i] for i in dev_idx]


def grouped_folds(
    sentences: Sequence[LabelledSentence], n_folds: int = 5, seed: int = 13
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cross-validation folds (train indices, held-out indices) that keep documents whole.

    Stratified on commitment so that rare types (support, funding) appear in every held-out fold.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    folds = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    groups = [s.doc_id for s in sentences]
    y = [s.commitment for s in sentences]
    return list(folds.split(np.zeros(len(sentences)), y, groups=groups))


# --- Hugging Face datasets ----------------------------------------------------------------------------


def to_dataset(sentences: Sequence[LabelledSentence]) -> datasets.Dataset:
    """An HF `Dataset` with columns id, doc_id, sentence_index, text, strategy (list), commitment."""
    import datasets

    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "doc_id": datasets.Value("string"),
            "sentence_index": datasets.Value("int64"),
            "text": datasets.Value("string"),
            "strategy": datasets.Sequence(datasets.Value("string")),
            "commitment": datasets.Value("string"),
        }
    )
    columns: dict[str, list] = {name: [] for name in features}
    for position, s in enumerate(sentences):
        columns["id"].append(s.id)
        columns["doc_id"].append(s.doc_id)
        columns["sentence_index"].append(s.sentence_index if s.sentence_index is not None else position)
        columns["text"].append(s.text)
        columns["strategy"].append(list(s.strategy))
        columns["commitment"].append(s.commitment)
    return datasets.Dataset.from_dict(columns, features=features)


def load_dataset_dict(
    train: Sequence[Path | str | TrainingSource], dev: Path | str | None = None
) -> datasets.DatasetDict:
    """Validated labelled files as an HF `DatasetDict` with "train" (and "dev")."""
    import datasets

    train_sentences, dev_sentences = read_training_data(train, dev)
    splits = {"train": to_dataset(train_sentences)}
    if dev_sentences is not None:
        splits["dev"] = to_dataset(dev_sentences)
    return datasets.DatasetDict(splits)
