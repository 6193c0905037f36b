"""Segmentation: cleaning, the Swedish sentence splitter, answer structure and sentence roles.

Sentence offsets index the original document text (`document.text[start:end]`); a sentence's `text` is the
cleaned passage, which `segment` returns whole as `cleaned_text`.
"""

from pipeline.segment.answer import (
    AnsweredQuestion,
    AnswerMetadata,
    assign_roles,
    describe_answer,
    document_facts,
    parse_heading,
)
from pipeline.segment.clean import CleanedText, clean_text, clean_with_offsets
from pipeline.segment.splitter import split_sentences
from pipeline.segment.stage import (
    EmptyDocumentError,
    SegmentedDocument,
    SegmentResult,
    segment,
    segment_document,
    segment_documents,
    segment_stage,
    with_answer_metadata,
)

__all__ = [
    "AnswerMetadata",
    "AnsweredQuestion",
    "CleanedText",
    "EmptyDocumentError",
    "SegmentResult",
    "SegmentedDocument",
    "assign_roles",
    "clean_text",
    "clean_with_offsets",
    "describe_answer",
    "document_facts",
    "parse_heading",
    "segment",
    "segment_document",
    "segment_documents",
    "segment_stage",
    "split_sentences",
    "with_answer_metadata",
]
