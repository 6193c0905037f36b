"""Reading and writing documents: JSONL (.jsonl, .jsonl.gz), single files and folders of files.

`read_documents` never stops at a bad line or file: it yields a `Reject` naming it and goes on. Content
checks (empty, too long, not Swedish...) belong to ingest (`screening.py`); the readers only report what
stops a text from being read at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pipeline.io.files import FILE_SUFFIXES, UnreadableFile, read_file
from pipeline.io.jsonl import BadLine, is_jsonl, read_jsonl, write_jsonl
from pipeline.io.rejects import Reject
from pipeline.schema import Document, Sentence

DocumentOrReject = Document | Reject
_DOCUMENT_FIELDS = ("id", "text", "title", "date")


def document_from_record(record: dict[str, Any]) -> Document:
    """A Document from a JSON object: `id` and `text` required, `title`/`date` optional, the rest metadata."""
    metadata = dict(record.get("metadata") or {})
    metadata.update({k: v for k, v in record.items() if k not in (*_DOCUMENT_FIELDS, "metadata")})
    return Document(
        id=str(record["id"]),
        text=record["text"],
        title=record.get("title"),
        date=None if record.get("date") is None else str(record["date"]),
        metadata=metadata,
    )


def _record_problem(record: Any) -> str | None:
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    for field in ("id", "text"):
        if field not in record:
            return f"missing field {field!r}"
        if record[field] is None:
            return f"field {field!r} is null"
    if not isinstance(record["text"], str):
        return f"field 'text' must be a string, got {type(record['text']).__name__}"
    return None


def _blank_lines_note(path: Path, numbers: list[int]) -> Reject:
    shown = ", ".join(map(str, numbers[:20])) + (f" and {len(numbers) - 20} more" if len(numbers) > 20 else "")
    return Reject(
        id=path.name,
        source=str(path),
        reason=f"{len(numbers)} blank line(s) skipped (line {shown}): no document there",
        severity="note",
    )


def read_sentences(path: Path) -> Iterator[Sentence]:
    """The segment stage's output: sentences, in document order; a bad line is an error (the file is ours)."""
    for number, record in read_jsonl(path):
        if isinstance(record, BadLine):
            raise ValueError(f"{path}: line {number}: {record.reason}")
        try:
            yield Sentence.model_validate(record)
        except ValidationError as exc:
            raise ValueError(f"{path}: line {number}: not a sentence ({exc.errors()[0]['msg']})") from None


def read_jsonl_documents(path: Path) -> Iterator[DocumentOrReject]:
    """Documents from a JSONL file, one object per line; each bad line becomes a Reject.

    Blank lines hold no document; they are counted and reported in one `note` per file.
    """
    source = str(path)
    blank: list[int] = []
    try:
        for number, record in read_jsonl(path, blank):
            where = f"{path.name}:{number}"
            if isinstance(record, BadLine):
                yield Reject(id=where, source=source, reason=f"line {number}: {record.reason}")
                continue
            problem = _record_problem(record)
            if problem:
                has_id = isinstance(record, dict) and record.get("id") is not None
                doc_id = str(record["id"]) if has_id else where
                yield Reject(id=doc_id, source=source, reason=f"line {number}: {problem}")
                continue
            try:
                yield document_from_record(record)
            except ValidationError as exc:
                reason = f"line {number}: {exc.errors()[0]['msg']}"
                yield Reject(id=str(record["id"]), source=source, reason=reason)
    except (OSError, EOFError) as exc:  # a truncated or corrupt .gz stops this file, not the run
        yield Reject(id=path.name, source=source, reason=f"cannot read the rest of the file: {exc}")
    if blank:
        yield _blank_lines_note(path, blank)


def _read_one_file(path: Path, doc_id: str) -> DocumentOrReject:
    try:
        text, title = read_file(path)
    except (UnreadableFile, OSError) as exc:
        return Reject(id=doc_id, source=str(path), reason=str(exc))
    return Document(id=doc_id, text=text, title=title, metadata={"path": str(path)})


def read_parquet_documents(path: Path) -> Iterator[DocumentOrReject]:
    """Documents from a Parquet file, one row per document, with the JSONL rules (`id`, `text`, ...)."""
    import pyarrow.parquet as pq

    source = str(path)
    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
        number = 0
        for batch in batches:
            for record in batch.to_pylist():
                number += 1
                where = f"{path.name}:row {number}"
                problem = _record_problem(record)
                if problem:
                    doc_id = str(record["id"]) if record.get("id") is not None else where
                    yield Reject(id=doc_id, source=source, reason=f"row {number}: {problem}")
                    continue
                try:
                    yield document_from_record(record)
                except ValidationError as exc:
                    yield Reject(id=str(record["id"]), source=source, reason=f"row {number}: {exc.errors()[0]['msg']}")
    except (OSError, ValueError) as exc:  # pyarrow raises ArrowInvalid (a ValueError) for a corrupt file
        yield Reject(id=path.name, source=source, reason=f"cannot read the Parquet file: {exc}")


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() == ".parquet"


@dataclass(frozen=True)
class Source:
    """One unit of input, read as a whole by one reader: a JSONL or Parquet file, a text file, or a file of
    a type no reader takes (`unsupported`). `doc_id` is a single file's document id; `root` the folder."""

    path: str
    doc_id: str
    root: str | None = None
    unsupported: bool = False


def document_sources(path: Path) -> list[Source]:
    """The sources under `path`, in the order `read_documents` reads them (a folder: path order).

    Hidden files are skipped; any other file type is an `unsupported` source, read as a Reject.
    Raises FileNotFoundError when `path` does not exist.
    """
    path = Path(path)
    if path.is_file():
        return [Source(str(path), path.name)]
    if not path.is_dir():
        raise FileNotFoundError(
            f"{path}: no such file or folder (expected a .jsonl(.gz) or .parquet file, or a folder)"
        )
    sources = []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        relative = file.relative_to(path)
        if any(part.startswith(".") for part in relative.parts) or file.name.startswith("~$"):
            continue
        known = is_jsonl(file) or _is_parquet(file) or file.suffix.lower() in FILE_SUFFIXES
        sources.append(Source(str(file), relative.as_posix(), str(path), unsupported=not known))
    return sources


def read_source(source: Source) -> Iterator[DocumentOrReject]:
    """The documents (and Rejects) of one source; the same reader whichever engine calls it."""
    path = Path(source.path)
    if source.unsupported:
        yield Reject(
            id=source.doc_id,
            source=str(source.root),
            reason=f"unsupported file type {path.suffix or '(none)'}; expected one of "
            f"{sorted(FILE_SUFFIXES | {'.jsonl', '.jsonl.gz', '.parquet'})}",
        )
    elif is_jsonl(path):
        yield from read_jsonl_documents(path)
    elif _is_parquet(path):
        yield from read_parquet_documents(path)
    else:
        yield _read_one_file(path, source.doc_id)


def read_folder_documents(folder: Path) -> Iterator[DocumentOrReject]:
    """Every .txt/.md/.html/.docx, JSONL and Parquet file under `folder`, in path order; ids are relative paths.

    Hidden files are skipped; any other file type becomes a Reject so nothing disappears silently.
    """
    for source in document_sources(folder):
        yield from read_source(source)


def read_documents(path: Path) -> Iterator[DocumentOrReject]:
    """Documents from a JSONL(.gz) or Parquet file, a single text/HTML/Word file, or a folder of them.

    Raises FileNotFoundError when `path` does not exist; every other problem is a per-document Reject.
    """
    for source in document_sources(Path(path)):
        yield from read_source(source)


def write_documents(path: Path, documents: Iterable[Document]) -> int:
    """Write documents as JSONL (gzip when the name ends in .gz); returns how many were written."""
    return write_jsonl(Path(path), (d.model_dump(mode="json") for d in documents))
