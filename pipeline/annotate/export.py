"""Export for annotation: sentences with their neighbours and, given a model, its guess and how unsure it is
(most uncertain first, so annotators' time goes where the model learns most)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import ValidationError

from pipeline.annotate.sheet import STRATEGY_SEPARATOR, write_annotation_csv
from pipeline.io.jsonl import BadLine, read_jsonl
from pipeline.labelled_data import DataProblem, LabelledDataError, in_document_order, sentence_texts
from pipeline.schema import HeadProbabilities, LabelledSentence, Sentence

if TYPE_CHECKING:
    from pipeline.models.base import SentenceModel


def sentence_uncertainty(probs: HeadProbabilities) -> np.ndarray:
    """Per-sentence uncertainty in [0, 1]: the mean of the commitment entropy (normalised by log 5) and the
    mean binary entropy of the three strategy decisions. 0 = sure of everything, 1 = coin flips."""
    eps = 1e-12
    c = np.clip(probs.commitment, eps, 1.0)
    commitment = -(c * np.log(c)).sum(axis=1) / math.log(c.shape[1])
    s = np.clip(probs.strategy, eps, 1 - eps)
    strategy = (-(s * np.log2(s) + (1 - s) * np.log2(1 - s))).mean(axis=1)
    return np.clip((commitment + strategy) / 2, 0.0, 1.0)


def _as_labelled(sentence: LabelledSentence | Sentence) -> LabelledSentence:
    """Unlabelled segmenter output gets the gold-style id `doc_id#index` and empty labels for ordering."""
    if isinstance(sentence, LabelledSentence):
        return sentence
    return LabelledSentence(
        id=f"{sentence.doc_id}#{sentence.index}",
        doc_id=sentence.doc_id,
        text=sentence.text,
        strategy=[],
        commitment="none",
        sentence_index=sentence.index,
    )


def annotation_rows(
    sentences: Sequence[LabelledSentence | Sentence],
    model: SentenceModel | None = None,
    *,
    include_labels: bool = False,
    limit: int | None = None,
) -> list[dict[str, str]]:
    """Rows for the annotation CSV (keys `EXPORT_COLUMNS`).

    Sentences are put in document order to find their neighbours. With a model, its predictions fill
    `predicted_*` and `uncertainty`, and rows come most uncertain first; `limit` keeps the first rows.
    `include_labels` pre-fills `strategy`/`commitment` from labelled input (for review rather than blind
    annotation).
    """
    ordered = in_document_order([_as_labelled(s) for s in sentences])
    labelled_ids = {s.id for s in sentences if isinstance(s, LabelledSentence)} if include_labels else set()
    texts = sentence_texts(ordered)
    rows = [
        {
            "id": s.id,
            "doc_id": s.doc_id,
            "previous": t.previous,
            "text": s.text,
            "next": t.next,
            "predicted_strategy": "",
            "predicted_commitment": "",
            "uncertainty": "",
            "strategy": STRATEGY_SEPARATOR.join(s.strategy) if s.id in labelled_ids else "",
            "commitment": s.commitment if s.id in labelled_ids else "",
        }
        for s, t in zip(ordered, texts, strict=True)
    ]
    if model is not None and rows:
        probs = model.predict_proba(texts)
        uncertainty = sentence_uncertainty(probs)
        for row, strategy, commitment, u in zip(
            rows, probs.strategy_labels(), probs.commitment_labels(), uncertainty, strict=True
        ):
            row["predicted_strategy"] = STRATEGY_SEPARATOR.join(strategy)
            row["predicted_commitment"] = commitment
            row["uncertainty"] = f"{u:.4f}"
        order = np.argsort(-uncertainty, kind="stable")
        rows = [rows[i] for i in order]
    return rows[:limit] if limit is not None else rows


def export_for_annotation(
    sentences: Sequence[LabelledSentence | Sentence],
    path: Path | str,
    model: SentenceModel | None = None,
    *,
    include_labels: bool = False,
    limit: int | None = None,
) -> Path:
    """`pipeline annotate export`: write the annotation CSV for `sentences` (see `annotation_rows`)."""
    rows = annotation_rows(sentences, model, include_labels=include_labels, limit=limit)
    return write_annotation_csv(rows, path)


def read_sentences(path: Path | str) -> list[LabelledSentence | Sentence]:
    """Sentences to export from a JSONL file: segmenter output (`Sentence`) or labelled sentences."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: sentences file not found")
    out: list[LabelledSentence | Sentence] = []
    problems: list[DataProblem] = []
    for number, record in read_jsonl(path):
        if isinstance(record, BadLine):
            problems.append(DataProblem(str(path), number, f"not a sentence: {record.reason}"))
            continue
        try:
            kind = LabelledSentence if isinstance(record, dict) and "commitment" in record else Sentence
            out.append(kind.model_validate(record))
        except ValidationError as exc:
            problems.append(DataProblem(str(path), number, f"not a sentence: {str(exc).splitlines()[0]}"))
    if problems:
        raise LabelledDataError(problems)
    return out


def export_annotation_file(
    sentences: Path | str,
    output: Path | str,
    model: SentenceModel | Path | str | None = None,
    *,
    include_labels: bool = False,
    limit: int | None = None,
) -> int:
    """`pipeline annotate export SENTENCES OUTPUT [--model FOLDER]`: returns the number of rows written."""
    if isinstance(model, str | Path):
        from pipeline.models.base import load_model

        model = load_model(model)
    rows = annotation_rows(read_sentences(sentences), model, include_labels=include_labels, limit=limit)
    write_annotation_csv(rows, output)
    return len(rows)
