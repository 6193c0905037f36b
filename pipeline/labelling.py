"""The one labelling path: documents (or their sentences) in, labelled rows, per-document summaries and rejects out.

Batch labelling (`pipeline.label`), the registered pyfunc, the REST server and the distributed engine all call
`label_batch` (documents) or `label_sentences` (sentences already cut), so a document gets the same rows, the
same truncation flags and the same rejects whichever way it is labelled. Pure: no files, no MLflow; the model
is reached only through a predictor (`sentence_predictor`: the model configured as `label.*` says).

Nothing is dropped silently: every input item is labelled or listed in the rejects with its reason; a document
labelled only in part (cut at `max_chars`, or a sentence over the model's token limit) is labelled and listed
as a `warning`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.config_sections import LabelConfig, SegmentConfig
from pipeline.io.rejects import Reject
from pipeline.models.base import QuantizationOutOfTolerance, SentenceModel
from pipeline.schema import (
    COMMITMENT_LABELS,
    COMMITMENT_PROBABILITY_COLUMNS,
    DOCUMENT_FACTS,
    LABELLED_DOCUMENT,
    LABELLED_ROW,
    STRATEGY_LABELS,
    STRATEGY_PROBABILITY_COLUMNS,
    Document,
    HeadProbabilities,
    Sentence,
    SentenceText,
    arrow_schema,
    decide,
    with_context,
)
from pipeline.screening import DUPLICATE_ID, screen_document
from pipeline.segment import document_facts
from pipeline.timing import phase

REJECTED = "rejected"  # the document is not in the output
WARNING = "warning"  # the document is in the output, but not all of it was read (truncation)
NOTE = "note"  # nothing lost, e.g. blank lines skipped in a JSONL input
STAGE = "label"  # the `source` of rejects labelling decides
SENTENCE_SCHEMA = arrow_schema(LABELLED_ROW)
SUMMARY_SCHEMA = arrow_schema(LABELLED_DOCUMENT)
DOCUMENT_FACT_COLUMNS = tuple(name for name, _ in DOCUMENT_FACTS)

# Sentences in, probabilities out, with the sentences the model read only in part flagged (`truncated`).
Predictor = Callable[[Sequence[SentenceText]], HeadProbabilities]


# label.quantize -> the model's precision
_PRECISION = {"auto": "auto", "none": "float32", "dynamic-int8": "int8", "bf16": "bf16"}


def sentence_predictor(model: SentenceModel, cfg: LabelConfig) -> Predictor:
    """Configure the model's inference as `cfg` says and return its `predict_proba`, errors named by config key."""
    try:
        precision = _PRECISION[cfg.quantize]
        if precision == "auto" and "auto" not in model.precisions:  # no stored fast path for this kind
            precision = "float32"
        model.configure_inference(
            precision,
            cfg.threads,
            max_tokens_per_batch=cfg.max_tokens_per_batch,
            check_sentences=cfg.quantize_check_sentences,
            max_disagreement=cfg.quantize_max_disagreement,
        )
    except ValueError as exc:
        raise ValueError(f"label.quantize={cfg.quantize}: {exc} (set label.quantize=none)") from None

    def predict(sentences: Sequence[SentenceText]) -> HeadProbabilities:
        try:
            return model.predict_proba(sentences)
        except QuantizationOutOfTolerance as exc:
            raise QuantizationOutOfTolerance(
                f"label.quantize={cfg.quantize}: {exc} (label.quantize_max_disagreement); set label.quantize=none"
            ) from None

    return predict


@dataclass(frozen=True)
class ModelInfo:
    """Which model labelled the rows: written into every row (and into batch labelling's resume manifest)."""

    name: str
    version: str
    uri: str


@dataclass
class LabelledBatch:
    """What labelling a batch of documents gives: rows, per-document summaries, rejects and counts."""

    sentences: pa.Table  # one row per sentence, SENTENCE_SCHEMA
    summary: pa.Table  # one row per labelled document, SUMMARY_SCHEMA
    rejects: list[dict[str, Any]] = field(default_factory=list)  # id, source, reason, severity
    documents: int = 0  # input items seen: documents and readers' rejects
    labelled: int = 0  # documents with rows
    rejected: int = 0  # items listed in the rejects and absent from the rows
    warnings: int = 0  # documents labelled only in part


def reject_row(item_id: str, reason: str, severity: str = REJECTED, source: str = STAGE) -> dict[str, Any]:
    """A row of the rejects: a reader's `Reject` fields plus whether the document is in the output."""
    return {"id": item_id, "source": source, "reason": reason, "severity": severity}


def reader_reject(item: object) -> dict[str, Any]:
    """A reader's `Reject`, or a row for anything else that is not a Document."""
    if isinstance(item, Reject):
        return reject_row(item.id, item.reason, REJECTED if item.severity == "rejected" else item.severity, item.source)
    return reject_row("", f"not a document: got {type(item).__name__}")


def forced_split_warning(indexes: list[int], segment_cfg: SegmentConfig) -> str:
    """The warning for a document labelled with some sentences cut by force at the length limit."""
    return (
        f"{len(indexes)} sentence piece(s) cut by force at segment.max_sentence_chars="
        f"{segment_cfg.max_sentence_chars:,} (no punctuation or line break; flagged truncated; sentence indexes "
        f"{indexes})"
    )


@dataclass(frozen=True)
class _Prepared:
    document: Document  # with the answer's metadata, if any
    sentences: list[Sentence]
    cut: bool  # over max_chars: only the start was labelled
    forced: frozenset[int]  # indexes of sentence pieces cut by force at segment.max_sentence_chars


def _prepare(
    item: object,
    segment_cfg: SegmentConfig,
    max_chars: int,
    seen_ids: set[str],
    segmented: Mapping[str, Sequence[Sentence]] | None,
    rejects: list[dict[str, Any]],
) -> _Prepared | None:
    """Check one input item and cut it into sentences; None (and a reject) when there is nothing to label."""
    from pipeline.segment import EmptyDocumentError, segment, with_answer_metadata
    from pipeline.segment.stage import no_sentence_boundaries

    if not isinstance(item, Document):
        rejects.append(reader_reject(item))
        return None
    # the same screening as ingest, so a document gets the same verdict and reason from either
    problem = screen_document(item, max_chars=None)
    if problem is None and item.id in seen_ids:
        problem = DUPLICATE_ID
    if problem is not None:
        rejects.append(reject_row(item.id, problem))
        return None
    seen_ids.add(item.id)
    cut = len(item.text) > max_chars
    if not cut and segmented is not None and item.id in segmented:
        sentences, document = list(segmented[item.id]), item  # cut once, by the segment stage of this run
        forced = frozenset(s.index for s in sentences if s.forced)
        # ingest's answer metadata is the segmenter's when both clean alike; otherwise describe it here
        if segment_cfg.detect_answer_structure and not (
            "answer" in item.metadata and segment_cfg.join_hard_wrapped_lines
        ):
            document = with_answer_metadata(item, segment_cfg)
    else:
        try:
            done = segment(item.model_copy(update={"text": item.text[:max_chars]}) if cut else item, segment_cfg)
        except EmptyDocumentError:
            rejects.append(reject_row(item.id, "empty: no text left after cleaning"))
            return None
        except Exception as exc:  # one bad document must not end a long run; it is listed, not lost
            rejects.append(reject_row(item.id, f"segmentation failed: {type(exc).__name__}: {exc}"))
            return None
        unusable = no_sentence_boundaries(done, segment_cfg)
        if unusable is not None:
            rejects.append(reject_row(item.id, unusable))
            return None
        sentences, document, forced = done.sentences, done.document, done.forced_splits
    if not sentences:
        rejects.append(reject_row(item.id, "no sentences: nothing left to label after cleaning"))
        return None
    if cut:
        rejects.append(
            reject_row(
                item.id,
                f"over the length limit: {len(item.text)} characters > label.max_chars={max_chars}; "
                f"only the first {max_chars} characters were labelled",
                WARNING,
            )
        )
    if forced:
        rejects.append(reject_row(item.id, forced_split_warning(sorted(forced), segment_cfg), WARNING))
    return _Prepared(document, sentences, cut, forced)


def predict_unique(predict: Predictor, sentences: Sequence[SentenceText]) -> HeadProbabilities:
    """Run the model once per distinct sentence (headings, datelines and signatures repeat across answers)."""
    index: dict[SentenceText, int] = {}
    inverse = np.fromiter((index.setdefault(s, len(index)) for s in sentences), dtype=np.int64, count=len(sentences))
    return predict(list(index)).rows(inverse)


def sentence_table(
    sentences: Sequence[Sentence],
    probs: HeadProbabilities,
    info: ModelInfo,
    facts: Mapping[str, Mapping[str, str | None]] | None = None,
) -> pa.Table:
    """The labelled rows of `sentences` from their probabilities, by the one decision rule; `facts` gives
    each document's title, date, minister and question title by document id (None where not given)."""
    decisions = decide(probs)
    by_doc = facts or {}
    columns: dict[str, Any] = {
        "doc_id": [s.doc_id for s in sentences],
        **{c: [by_doc.get(s.doc_id, {}).get(c) for s in sentences] for c in DOCUMENT_FACT_COLUMNS},
        "index": [s.index for s in sentences],
        "start": [s.start for s in sentences],
        "end": [s.end for s in sentences],
        "role": [s.role for s in sentences],
        "text": [s.text for s in sentences],
        "strategy": decisions.strategy_labels(),
        **{c: probs.strategy[:, j] for j, c in enumerate(STRATEGY_PROBABILITY_COLUMNS)},
        "commitment": decisions.commitment_labels(),
        **{c: probs.commitment[:, j] for j, c in enumerate(COMMITMENT_PROBABILITY_COLUMNS)},
        "truncated": np.asarray(probs.truncated, dtype=bool),
        "model_name": [info.name] * len(sentences),
        "model_version": [info.version] * len(sentences),
    }
    return pa.Table.from_pydict(columns, schema=SENTENCE_SCHEMA)


def _empty_probabilities() -> HeadProbabilities:
    return HeadProbabilities(np.zeros((0, len(STRATEGY_LABELS))), np.zeros((0, len(COMMITMENT_LABELS))))


def _probabilities(sentences: Sequence[Sentence], predict: Predictor, context: bool) -> HeadProbabilities:
    if not sentences:
        return _empty_probabilities()
    if context:
        inputs = with_context((s.doc_id, s.text) for s in sentences)
    else:
        inputs = [SentenceText(text=s.text) for s in sentences]
    return predict_unique(predict, inputs)


def label_sentences(
    sentences: Sequence[Sentence], predict: Predictor, info: ModelInfo, *, context: bool = True
) -> pa.Table:
    """Label sentences already cut; with `context`, neighbours within a `doc_id` are the model's context."""
    return sentence_table(sentences, _probabilities(sentences, predict, context), info)


def label_batch(
    items: Sequence[object],
    predict: Predictor,
    info: ModelInfo,
    segment_cfg: SegmentConfig,
    *,
    max_chars: int,
    seen_ids: set[str] | None = None,
    segmented: Mapping[str, Sequence[Sentence]] | None = None,
) -> LabelledBatch:
    """Label a batch of documents (readers' `Reject` items pass straight to the rejects).

    `seen_ids` carries document ids across batches (a repeated id is rejected); `segmented` holds sentences
    the segment stage already cut, by document id, so a run segments each document once.
    """
    seen = set() if seen_ids is None else seen_ids
    rejects: list[dict[str, Any]] = []
    with phase("segment"):
        prepared = [p for item in items if (p := _prepare(item, segment_cfg, max_chars, seen, segmented, rejects))]
        flat = [s for p in prepared for s in p.sentences]
    with phase("infer"):  # the model counts its own tokenising apart (pipeline.timing)
        probs = _probabilities(flat, predict, context=True)
    with phase("rows"):
        over_token_limit = np.asarray(probs.truncated, dtype=bool)
        cut_by_force = np.fromiter((s.index in p.forced for p in prepared for s in p.sentences), bool, len(flat))
        probs.truncated = over_token_limit | cut_by_force  # a piece cut by force is a sentence cut, too
        facts = {p.document.id: document_facts(p.document) for p in prepared}
        table = sentence_table(flat, probs, info, facts)
        summary_rows, warnings = _summaries(prepared, table, over_token_limit, info, rejects)
    return LabelledBatch(
        sentences=table,
        summary=pa.Table.from_pylist(summary_rows, schema=SUMMARY_SCHEMA),
        rejects=rejects,
        documents=sum(1 for item in items if not (isinstance(item, Reject) and item.severity == NOTE)),
        labelled=len(prepared),
        rejected=sum(1 for r in rejects if r["severity"] == REJECTED),
        warnings=warnings,
    )


def _summaries(
    prepared: Sequence[_Prepared],
    table: pa.Table,
    over_token_limit: np.ndarray,
    info: ModelInfo,
    rejects: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], int]:
    """One summary row per labelled document, counting the labels its rows hold; sentences over the model's
    token limit are listed as warnings (appended to `rejects`). Returns the rows and the number of documents
    with warnings."""
    strategy = [set(labels) for labels in table["strategy"].to_pylist()]
    commitment = table["commitment"].to_pylist()
    truncated = table["truncated"].to_pylist()
    warnings = len({r["id"] for r in rejects if r["severity"] == WARNING})
    rows: list[dict[str, Any]] = []
    offset = 0
    for p in prepared:
        span = range(offset, offset + len(p.sentences))
        offset += len(p.sentences)
        cut_indexes = [s.index for s, i in zip(p.sentences, span, strict=True) if over_token_limit[i]]
        if cut_indexes:
            warnings += 0 if (p.cut or p.forced) else 1
            rejects.append(
                reject_row(
                    p.document.id,
                    f"{len(cut_indexes)} sentence(s) over the model's token limit were truncated "
                    f"(sentence indexes {cut_indexes})",
                    WARNING,
                )
            )
        rows.append(
            {
                "doc_id": p.document.id,
                **document_facts(p.document),
                "sentences": len(p.sentences),
                **{f"strategy_{label}": sum(label in strategy[i] for i in span) for label in STRATEGY_LABELS},
                "strategy_none": sum(not strategy[i] for i in span),
                **{f"commitment_{label}": sum(commitment[i] == label for i in span) for label in COMMITMENT_LABELS},
                "truncated": p.cut,
                "truncated_sentences": sum(truncated[i] for i in span),
                "metadata": json.dumps(p.document.metadata, ensure_ascii=False, sort_keys=True, default=str),
                "model_name": info.name,
                "model_version": info.version,
            }
        )
    return rows, warnings
