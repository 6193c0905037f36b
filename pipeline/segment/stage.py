"""The segment stage: documents in, sentences (with offsets into the document text and a role) out.

The splitter cuts the cleaned text (`clean_text(document.text, ...)` with the stage's `SegmentConfig`;
`segment` returns it), and a sentence's `text` is the cleaned sentence; `start`/`end` index the ORIGINAL
`document.text`, so `document.text[start:end]` is the passage as the input file holds it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.config_sections import SegmentConfig
from pipeline.io.documents import read_documents
from pipeline.io.jsonl import write_jsonl
from pipeline.io.rejects import Reject, write_rejects
from pipeline.schema import Document, Sentence
from pipeline.segment.answer import AnswerMetadata, assign_roles, attach_answer, describe_answer
from pipeline.segment.clean import clean_text, clean_with_offsets
from pipeline.segment.splitter import split_sentences


class EmptyDocumentError(ValueError):
    """The document has no text left after cleaning."""


@dataclass(frozen=True)
class SegmentedDocument:
    """A document cut into sentences, with the cleaned text the offsets point into."""

    document: Document  # a copy; metadata["answer"] is set when the text is a minister's answer
    cleaned_text: str  # what the splitter read; sentence texts are slices of it
    sentences: list[Sentence]
    answer: AnswerMetadata | None
    # indexes of sentences that are pieces of one over `segment.max_sentence_chars`, cut by force (no
    # punctuation or line break to end it): each piece is a sentence cut, like a truncated one
    forced_splits: frozenset[int] = frozenset()


@dataclass(frozen=True)
class SegmentResult:
    documents: int
    sentences: int
    rejects: int
    output: Path
    rejects_path: Path


def _limit_length(text: str, spans: list[tuple[int, int]], max_chars: int) -> tuple[list[tuple[int, int]], set[int]]:
    """Cut spans longer than `max_chars` at the last space before the limit (run-on tables, lists).

    Returns the spans and the indexes of the pieces cut by force (every piece of a span that was cut).
    """
    out: list[tuple[int, int]] = []
    forced: set[int] = set()
    for start, end in spans:
        first = len(out)
        while end - start > max_chars:
            cut = text.rfind(" ", start + 1, start + max_chars)
            if cut == -1:
                cut = start + max_chars
            out.append((start, cut))
            start = cut
            while start < end and text[start].isspace():
                start += 1
        out.append((start, end))
        if len(out) - first > 1:
            forced.update(range(first, len(out)))
    return out, forced


def segment(document: Document, cfg: SegmentConfig) -> SegmentedDocument:
    """Clean, split and give each sentence a role; raise `EmptyDocumentError` when nothing is left."""
    mapped = clean_with_offsets(document.text, join_hard_wrapped_lines=cfg.join_hard_wrapped_lines)
    cleaned = mapped.text
    if not cleaned:
        raise EmptyDocumentError(f"document {document.id!r}: no text left after cleaning")
    spans, forced = _limit_length(cleaned, split_sentences(cleaned), cfg.max_sentence_chars)
    answer = describe_answer(cleaned) if cfg.detect_answer_structure else None
    roles = assign_roles(cleaned, spans, answer=answer)
    sentences = [
        Sentence(doc_id=document.id, index=i, start=start, end=end, text=cleaned[s:e], role=role, forced=i in forced)
        for i, ((s, e), role) in enumerate(zip(spans, roles, strict=True))
        for start, end in [mapped.original_span(s, e)]
    ]
    return SegmentedDocument(attach_answer(document, answer), cleaned, sentences, answer, frozenset(forced))


def no_sentence_boundaries(segmented: SegmentedDocument, cfg: SegmentConfig) -> str | None:
    """Why a text with no sentence boundary at all is not used (its pieces would be arbitrary cuts); else None.

    A document with some sentences cut by force is kept, the pieces flagged; one cut everywhere is refused.
    """
    if not segmented.sentences or len(segmented.forced_splits) < len(segmented.sentences):
        return None
    return (
        f"no sentence boundaries: {len(segmented.cleaned_text):,} characters without sentence punctuation or a "
        f"line break within segment.max_sentence_chars={cfg.max_sentence_chars:,}; not used "
        "(split the text into sentences or lines first)"
    )


def with_answer_metadata(document: Document, cfg: SegmentConfig | None = None) -> Document:
    """The document with `metadata["answer"]` set when its cleaned text is a minister's answer."""
    join = True if cfg is None else cfg.join_hard_wrapped_lines
    return attach_answer(document, describe_answer(clean_text(document.text, join_hard_wrapped_lines=join)))


def segment_document(document: Document, cfg: SegmentConfig) -> list[Sentence]:
    """The sentences of one document (offsets into `document.text`)."""
    return segment(document, cfg).sentences


def segment_documents(documents: Iterable[Document], cfg: SegmentConfig) -> Iterator[Sentence | Reject]:
    """Sentences of every document in order; a document that cannot be segmented becomes a `Reject`."""
    for document in documents:
        try:
            segmented = segment(document, cfg)
        except EmptyDocumentError as exc:
            yield Reject(id=document.id, source="segment", reason=str(exc))
            continue
        problem = no_sentence_boundaries(segmented, cfg)
        if problem is not None:
            yield Reject(id=document.id, source="segment", reason=problem)
            continue
        yield from segmented.sentences


def segment_stage(cfg: SegmentConfig) -> SegmentResult:
    """Read `cfg.input` documents, write `cfg.output` sentences JSONL and `cfg.rejects`."""
    rejects: list[Reject] = []
    documents = 0

    def accepted() -> Iterator[Document]:
        nonlocal documents
        for item in read_documents(cfg.input):
            if isinstance(item, Reject):
                rejects.append(item)
            else:
                documents += 1
                yield item

    sentences = 0

    def kept() -> Iterator[Sentence]:
        nonlocal sentences
        for item in segment_documents(accepted(), cfg):
            if isinstance(item, Reject):
                rejects.append(item)
            else:
                sentences += 1
                yield item

    write_jsonl(cfg.output, (s.model_dump(mode="json") for s in kept()))
    write_rejects(cfg.rejects, rejects)
    return SegmentResult(documents, sentences, len(rejects), cfg.output, cfg.rejects)
