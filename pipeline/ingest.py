"""The ingest stage: documents from a JSONL file, a folder or the Riksdag API, screened, into one JSONL.

Every document that cannot be used (unreadable, empty, too long, binary, markup soup, not Swedish,
duplicate id) is written to the rejects file with the reason; one bad document never stops the others.
Answers get their parsed structure (questions, asker, party, dateline date, minister) in
`metadata["answer"]`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.config_sections import IngestConfig
from pipeline.io.documents import DocumentOrReject, read_documents, write_documents
from pipeline.io.rejects import Reject, write_rejects
from pipeline.schema import Document
from pipeline.screening import DUPLICATE_ID, screen_document
from pipeline.segment import with_answer_metadata


@dataclass(frozen=True)
class IngestResult:
    documents: int
    rejects: int
    output: Path
    rejects_path: Path


def _source(cfg: IngestConfig) -> tuple[Iterator[DocumentOrReject], str]:
    if cfg.source == "riksdagen":
        from pipeline.io.riksdagen import riksdagen_documents

        return riksdagen_documents(cfg.riksdagen), cfg.riksdagen.base_url
    if cfg.input is None:
        raise ValueError(f"ingest.input is required for source {cfg.source!r} (a .jsonl(.gz) file or a folder)")
    if cfg.source == "jsonl" and cfg.input.is_dir():
        raise ValueError(f"ingest.input {cfg.input} is a folder; source 'jsonl' expects a .jsonl(.gz) file")
    return read_documents(cfg.input), str(cfg.input)


def screened_documents(cfg: IngestConfig, rejects: list[Reject]) -> Iterator[Document]:
    """Usable documents from the configured source; everything else is appended to `rejects`."""
    items, source = _source(cfg)
    seen: set[str] = set()
    for item in items:
        if isinstance(item, Reject):
            rejects.append(item)
            continue
        reason = screen_document(item, max_chars=cfg.max_chars)
        if reason is None and item.id in seen:
            reason = DUPLICATE_ID
        if reason is not None:
            rejects.append(Reject(id=item.id, source=str(item.metadata.get("path", source)), reason=reason))
            continue
        seen.add(item.id)
        yield with_answer_metadata(item)


def ingest(cfg: IngestConfig) -> IngestResult:
    """Read, screen and write documents to `cfg.output`, rejects to `cfg.rejects`."""
    rejects: list[Reject] = []
    written = write_documents(cfg.output, screened_documents(cfg, rejects))
    write_rejects(cfg.rejects, rejects)
    rejected = sum(1 for r in rejects if r.severity == "rejected")  # notes (blank lines) lose nothing
    return IngestResult(written, rejected, cfg.output, cfg.rejects)
