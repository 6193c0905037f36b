"""Segmentation: cleaning, the Swedish sentence splitter, answer structure and sentence roles.

Sentence offsets refer to the cleaned text; reproduce it with
`clean_text(document.text, join_hard_wrapped_lines=cfg.join_hard_wrapped_lines)`, or call `segment`,
which returns it with the sentences.
"""

from pipeline.segment.answer import (
    AnsweredQuestion,
    AnswerMetadata,
    assign_roles,
    describe_answer,
    parse_heading,
)
from pipeline.segment.clean import clean_text
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
    "EmptyDocumentError",
    "SegmentResult",
    "SegmentedDocument",
    "assign_roles",
    "clean_text",
    "describe_answer",
    "parse_heading",
    "segment",
    "segment_document",
    "segment_documents",
    "segment_stage",
    "split_sentences",
    "with_answer_metadata",
]
