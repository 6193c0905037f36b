"""Pseudo-labels: a saved teacher model labels unlabelled documents, and the sentences it is sure of become a
labelled file that `data.train` takes as a weighted source (self-training, distillation).

The documents are segmented and labelled through the one labelling path (`pipeline.labelling.label_batch`),
so a pseudo-labelled sentence is exactly the row batch labelling would give it. Documents whose id is a
`doc_id` of any excluded labelled file (gold train, silver, and always the dev set that is reported) are
counted and left out before labelling: a labelled document must not come back with the teacher's labels, and
dev must stay unseen.

The confidence rule (exact). A sentence's `confidence` is the smallest of

- the commitment head's highest probability (the type that is written), and
- for each strategy dimension, `p` where the teacher sets the label (`p` at or above its threshold), else
  `1 - p`;

and the sentence is kept when `confidence >= min_confidence`. So the written commitment has probability
>= m, every strategy label written has p >= its threshold and p >= m, and every label left out has p below its
threshold and p <= 1 - m. A label the teacher's threshold sets with p < m is not sure, so its sentence is
dropped even where p <= 1 - m (a threshold below 1 - m). Sentences the model read only in part (`truncated`)
are never kept.

With `distinct_texts` a sentence text is kept once, where it first occurs: page furniture and stock phrases
that recur across hundreds of pages would otherwise count hundreds of times. `max_sentences` then caps the
kept sentences balanced by commitment type: the types take turns (in `COMMITMENT_LABELS` order), each giving
its next sentence in a random order drawn with `seed`, until the cap is reached or every type is spent; the
kept sentences stay in document order.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.config_sections import LabelConfig, PseudoLabelConfig, SegmentConfig
from pipeline.io.atomic import write_text_atomic
from pipeline.io.documents import read_documents
from pipeline.io.jsonl import BadLine, read_jsonl, write_jsonl
from pipeline.labelling import ModelInfo, label_batch, sentence_predictor
from pipeline.models.base import SentenceModel
from pipeline.schema import (
    COMMITMENT_LABELS,
    COMMITMENT_PROBABILITY_COLUMNS,
    STRATEGY_LABELS,
    STRATEGY_PROBABILITY_COLUMNS,
    Document,
)
from pipeline.timing import StageClock, phase

ANNOTATION = "pseudo"  # the `annotation` of every pseudo-labelled sentence (gold: none, silver: "single")
# document metadata copied onto each sentence, as the gold files carry it
DOCUMENT_FIELDS = ("category", "year")


class ExcludeFileError(ValueError):
    """An excluded labelled file whose documents cannot all be read: pseudo-labelling would leak them."""


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".jsonl.gz", ".jsonl"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def summary_path(cfg: PseudoLabelConfig) -> Path:
    return cfg.summary or cfg.output.with_name(f"{_stem(cfg.output)}.summary.json")


def rejects_path(cfg: PseudoLabelConfig) -> Path:
    return cfg.rejects or cfg.output.with_name(f"{_stem(cfg.output)}.rejects.jsonl")


def excluded_documents(paths: Iterable[Path]) -> dict[Path, set[str]]:
    """The `doc_id`s of each labelled file, by file. A line without a readable `doc_id` is an error naming the
    file and line: skipping it could let a labelled (or dev) document through."""
    out: dict[Path, set[str]] = {}
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(f"pseudo_label.exclude: {path}: file not found")
        ids: set[str] = set()
        for number, record in read_jsonl(path):
            if isinstance(record, BadLine):
                raise ExcludeFileError(f"pseudo_label.exclude: {path}:{number}: {record.reason}")
            if not isinstance(record, dict) or not isinstance(record.get("doc_id"), str) or not record["doc_id"]:
                raise ExcludeFileError(f"pseudo_label.exclude: {path}:{number}: no 'doc_id' (a string) on the line")
            ids.add(record["doc_id"])
        out[path] = ids
    return out


def confidence(table: pa.Table) -> np.ndarray:
    """Each labelled row's confidence on both heads (the module docstring's rule), from its probabilities and
    the labels the teacher decided."""
    if table.num_rows == 0:
        return np.zeros(0)
    commitment = np.column_stack([table[c].to_numpy() for c in COMMITMENT_PROBABILITY_COLUMNS])
    strategy = np.column_stack([table[c].to_numpy() for c in STRATEGY_PROBABILITY_COLUMNS])
    chosen = np.array([[label in labels for label in STRATEGY_LABELS] for labels in table["strategy"].to_pylist()])
    sure_of_strategy = np.where(chosen, strategy, 1.0 - strategy).min(axis=1)
    return np.minimum(commitment.max(axis=1), sure_of_strategy)


def balanced_cap(commitments: Sequence[str], limit: int, seed: int) -> list[int]:
    """Indexes of at most `limit` sentences, the commitment types taking turns (a seeded order within each)."""
    rng = np.random.default_rng(seed)
    queues = [
        list(rng.permutation([i for i, c in enumerate(commitments) if c == label])) for label in COMMITMENT_LABELS
    ]
    chosen: list[int] = []
    turn = 0
    while len(chosen) < limit and any(queues):
        queue = queues[turn % len(queues)]
        if queue:
            chosen.append(int(queue.pop(0)))
        turn += 1
    return sorted(chosen)


def _label_counts(sentences: Iterable[dict[str, Any]]) -> dict[str, dict[str, int]]:
    commitment: Counter[str] = Counter()
    strategy: Counter[str] = Counter()
    for s in sentences:
        commitment[s["commitment"]] += 1
        strategy.update(s["strategy"] or ["none"])
    return {
        "commitment": {label: commitment[label] for label in COMMITMENT_LABELS},
        "strategy": {label: strategy[label] for label in (*STRATEGY_LABELS, "none")},
    }


@dataclass
class PseudoLabelResult:
    """What pseudo-labelling did: the files it wrote and every count its summary JSON holds."""

    output: Path
    summary: Path
    rejects: Path
    documents_read: int = 0  # input items: documents and readers' rejects (blank-line notes not counted)
    documents_excluded: int = 0
    documents_labelled: int = 0
    documents_rejected: int = 0
    sentences_seen: int = 0
    sentences_truncated: int = 0  # read only in part: never kept
    sentences_confident: int = 0  # passed the confidence rule
    sentences_repeated: int = 0  # confident, but the same text was kept already (distinct_texts)
    sentences_kept: int = 0  # written (after max_sentences)
    seen_per_label: dict[str, dict[str, int]] = field(default_factory=dict)
    kept_per_label: dict[str, dict[str, int]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """Flat numbers for MLflow: the counts, and sentences kept per label."""
        counts = {
            name: float(getattr(self, name))
            for name in (
                "documents_read",
                "documents_excluded",
                "documents_labelled",
                "documents_rejected",
                "sentences_seen",
                "sentences_truncated",
                "sentences_confident",
                "sentences_repeated",
                "sentences_kept",
            )
        }
        for head, labels in self.kept_per_label.items():
            counts.update({f"kept_{head}_{label}": float(n) for label, n in labels.items()})
        return counts


def _documents(corpus: Sequence[Path]) -> Iterator[object]:
    for path in corpus:
        try:
            yield from read_documents(Path(path))
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"pseudo_label.corpus: {exc}") from None


def _sentence_lines(
    table: pa.Table, sure: np.ndarray, documents: dict[str, Document], cfg: PseudoLabelConfig, teacher: ModelInfo
) -> list[dict[str, Any]]:
    """The labelled lines of a batch's rows, in the gold files' format plus where the labels came from."""
    lines = []
    probabilities = (*STRATEGY_PROBABILITY_COLUMNS, *COMMITMENT_PROBABILITY_COLUMNS)
    rows = table.select(["doc_id", "index", "role", "text", "strategy", "commitment", *probabilities]).to_pylist()
    for row, value in zip(rows, sure, strict=True):
        metadata = documents[row["doc_id"]].metadata
        lines.append(
            {
                "id": f"{row['doc_id']}#{row['index']}",
                "doc_id": row["doc_id"],
                "sentence_index": row["index"],
                **{name: metadata[name] for name in DOCUMENT_FIELDS if metadata.get(name) is not None},
                "text": row["text"],
                "strategy": row["strategy"],
                "commitment": row["commitment"],
                "annotation": ANNOTATION,
                "source": cfg.source_name,
                "confidence": float(value),
                "teacher": teacher.uri,
                "role": row["role"],
                **{c: row[c] for c in probabilities},
            }
        )
    return lines


def pseudo_label(
    cfg: PseudoLabelConfig,
    teacher: SentenceModel,
    teacher_info: ModelInfo,
    segment_cfg: SegmentConfig,
    inference: LabelConfig,
    extra_exclude: Sequence[Path] = (),
) -> PseudoLabelResult:
    """Pseudo-label `cfg.corpus` with `teacher` into `cfg.output` (plus its summary JSON and rejects file).

    `extra_exclude`: labelled files left out besides `cfg.exclude` (the run's dev set). `inference` gives the
    teacher's precision, threads and token budget and the longest document read (`label.max_chars`). Raises
    FileNotFoundError for a missing corpus or exclude file and ExcludeFileError for an unreadable exclude line,
    each naming the file; a bad document is a row of the rejects file, never an error.
    """
    result = PseudoLabelResult(cfg.output, summary_path(cfg), rejects_path(cfg))
    clock = StageClock()
    with clock.measuring():
        exclude_files = list(dict.fromkeys([*map(Path, cfg.exclude), *map(Path, extra_exclude)]))
        with phase("read"):
            by_file = excluded_documents(exclude_files)
        excluded = set().union(*by_file.values()) if by_file else set()
        predict = sentence_predictor(teacher, inference)
        seen_ids: set[str] = set()
        rejects: list[dict[str, Any]] = []
        candidates: list[dict[str, Any]] = []
        kept_texts: set[str] = set()
        seen: list[dict[str, Any]] = []
        items = _documents(cfg.corpus)
        while True:
            with phase("read"):
                chunk = list(itertools.islice(items, cfg.chunk_documents))
            if not chunk:
                break
            kept_items = []
            for item in chunk:
                if isinstance(item, Document) and item.id in excluded:
                    result.documents_excluded += 1
                    result.documents_read += 1
                else:
                    kept_items.append(item)
            batch = label_batch(
                kept_items, predict, teacher_info, segment_cfg, max_chars=inference.max_chars, seen_ids=seen_ids
            )
            with phase("rows"):
                result.documents_read += batch.documents
                result.documents_labelled += batch.labelled
                result.documents_rejected += batch.rejected
                rejects.extend(batch.rejects)
                documents = {item.id: item for item in kept_items if isinstance(item, Document)}
                table = batch.sentences
                sure = confidence(table)
                truncated = np.asarray(table["truncated"].to_pylist(), dtype=bool)
                seen.extend(
                    {"commitment": c, "strategy": s}
                    for c, s in zip(table["commitment"].to_pylist(), table["strategy"].to_pylist(), strict=True)
                )
                result.sentences_truncated += int(truncated.sum())
                # lines are built for the sure sentences only (sentences read in part never count)
                confident = np.flatnonzero(~truncated & (sure >= cfg.min_confidence))
                result.sentences_confident += len(confident)
                for line in _sentence_lines(table.take(confident), sure[confident], documents, cfg, teacher_info):
                    if cfg.distinct_texts and line["text"] in kept_texts:
                        result.sentences_repeated += 1
                        continue
                    kept_texts.add(line["text"])
                    candidates.append(line)
        result.sentences_seen = len(seen)
        if cfg.max_sentences is not None and len(candidates) > cfg.max_sentences:
            picked = balanced_cap([c["commitment"] for c in candidates], cfg.max_sentences, cfg.seed)
            candidates = [candidates[i] for i in picked]
        result.sentences_kept = len(candidates)
        result.seen_per_label = _label_counts(seen)
        result.kept_per_label = _label_counts(candidates)
        with phase("write"):
            write_jsonl(result.output, candidates)
            write_jsonl(result.rejects, rejects)
    result.timings = clock.report()
    summary = {
        "teacher": {"uri": teacher_info.uri, "name": teacher_info.name, "version": teacher_info.version},
        "corpus": [str(p) for p in cfg.corpus],
        "exclude": [{"path": str(p), "documents": len(ids)} for p, ids in by_file.items()],
        "min_confidence": cfg.min_confidence,
        "max_sentences": cfg.max_sentences,
        "seed": cfg.seed,
        "source": cfg.source_name,
        "documents": {
            "read": result.documents_read,
            "excluded": result.documents_excluded,
            "labelled": result.documents_labelled,
            "rejected": result.documents_rejected,
        },
        "sentences": {
            "seen": result.sentences_seen,
            "truncated": result.sentences_truncated,
            "confident": result.sentences_confident,
            "repeated": result.sentences_repeated,
            "kept": result.sentences_kept,
        },
        "seen_per_label": result.seen_per_label,
        "kept_per_label": result.kept_per_label,
        "output": str(result.output),
        "rejects": str(result.rejects),
        "seconds": result.timings,
    }
    write_text_atomic(result.summary, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return result
