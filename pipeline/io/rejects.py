"""A document (or line, or file) the pipeline could not use, and why: one row of a rejects file."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from pipeline.io.jsonl import write_jsonl


class Reject(BaseModel):
    """`id`: the document id, or the path (and line) when no id could be read; `source`: the input file,
    folder or service it came from; `reason`: one line for a person to act on; `severity`: `rejected` (a
    document, or what may have been one, is not in the output) or `note` (nothing was lost, e.g. blank
    lines skipped in a JSONL file)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    source: str
    reason: str
    severity: Literal["rejected", "note"] = "rejected"


def write_rejects(path: Path, rejects: Iterable[Reject]) -> int:
    """Write rejects as JSONL (fields id, source, reason); returns how many were written."""
    return write_jsonl(path, (r.model_dump() for r in rejects))
