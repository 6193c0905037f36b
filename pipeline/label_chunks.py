"""The local engine's resumable store: labelled chunks under `<output>.partial/`, joined into the final files.

Each chunk is committed by one atomic directory rename, with a card naming its input's digest, so a rerun
finds what is done, checks it was done on the same input, and labels only the rest. The final files are
written under temporary names and renamed into place, the sentence file last.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from pipeline.config_sections import LABEL_OUTPUT_FORMATS
from pipeline.io.atomic import atomic_path, write_text_atomic
from pipeline.label_output import MANIFEST, LabelPaths, LabelRunMismatch
from pipeline.labelling import SENTENCE_SCHEMA, SUMMARY_SCHEMA, LabelledBatch, reader_reject
from pipeline.schema import Document

_CHUNK_CARD = "chunk.json"
# Rows per Parquet row group in the final sentence and summary files: chunks are joined into groups this large
# (a reader scans a few large groups, not one small group per chunk; columns compress better).
ROW_GROUP_ROWS = 128 * 1024


def _item_digest(item: object) -> str:
    payload = item.model_dump_json() if isinstance(item, Document) else json.dumps(reader_reject(item), sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()


def chunk_digest(items: Sequence[object]) -> str:
    """The digest of a chunk's input items (documents and reader rejects), to recognise it on a rerun."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(_item_digest(item).encode())
    return digest.hexdigest()


def _chunk_dir(partial: Path, k: int) -> Path:
    return partial / f"chunk-{k:06d}"


def discard_unfinished_chunks(partial: Path) -> None:
    """Remove a chunk that was being written when a run was killed (committed ones are kept)."""
    for leftover in partial.glob(".chunk-*.tmp"):
        shutil.rmtree(leftover)


def committed_chunk(partial: Path, k: int, digest: str, first_document: int, size: int) -> dict[str, Any] | None:
    """Chunk `k`'s card if an earlier run committed it, None if not; refused if its input was other."""
    done = _chunk_dir(partial, k)
    if not done.is_dir():
        return None
    card = json.loads((done / _CHUNK_CARD).read_text(encoding="utf-8"))
    if card["digest"] != digest:
        raise LabelRunMismatch(
            f"{partial}: the input differs from the interrupted run's at documents "
            f"{first_document}..{first_document + size - 1}; delete {partial} to start over"
        )
    return card


def commit_chunk(partial: Path, k: int, tables: LabelledBatch, digest: str) -> dict[str, Any]:
    """Write one chunk to a temporary folder and rename it into place: a chunk is whole or absent."""
    card = {
        "digest": digest,
        "documents": tables.documents,
        "labelled": tables.labelled,
        "sentences": tables.sentences.num_rows,
        "rejected": tables.rejected,
        "warnings": tables.warnings,
    }
    with atomic_path(_chunk_dir(partial, k)) as tmp:
        tmp.mkdir()
        pq.write_table(tables.sentences, tmp / "sentences.parquet")
        pq.write_table(tables.summary, tmp / "summary.parquet")
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in tables.rejects)
        (tmp / "rejects.jsonl").write_text(lines, encoding="utf-8")
        (tmp / _CHUNK_CARD).write_text(json.dumps(card, indent=2), encoding="utf-8")
    return card


def join_chunks(partial: Path, n_chunks: int, paths: LabelPaths) -> None:
    """Join the committed chunks into the final files; the sentence file is replaced last.

    Refused when the folder holds more chunks than this run's input made (the interrupted run had more input).
    """
    extra = _chunk_dir(partial, n_chunks)
    if extra.is_dir():
        raise LabelRunMismatch(
            f"{partial}: the interrupted run had more input than this one ({extra.name} is committed but the "
            f"input ended after {n_chunks} chunk(s)); delete {partial} to start over"
        )
    chunks = [_chunk_dir(partial, k) for k in range(n_chunks)]
    rejects = "".join((c / "rejects.jsonl").read_text(encoding="utf-8") for c in chunks)
    paths.rejects.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(paths.rejects, rejects)
    write_table_parts([c / "summary.parquet" for c in chunks], SUMMARY_SCHEMA, paths.summary)
    write_text_atomic(paths.record, (partial / MANIFEST).read_text(encoding="utf-8"))
    write_table_parts([c / "sentences.parquet" for c in chunks], SENTENCE_SCHEMA, paths.output)


def write_table_parts(parts: Sequence[Path], schema: pa.Schema, target: Path) -> None:
    """Stream parquet parts into one .parquet, .jsonl or .csv file, written aside and renamed into place."""
    suffix = target.suffix.lower()
    if suffix not in LABEL_OUTPUT_FORMATS:
        raise ValueError(f"{target}: unknown format {suffix!r}; use one of {', '.join(LABEL_OUTPUT_FORMATS)}")
    with atomic_path(target) as tmp:
        _write_parts(parts, schema, tmp, suffix)


def _write_parts(parts: Sequence[Path], schema: pa.Schema, tmp: Path, suffix: str) -> None:
    if suffix == ".parquet":
        with pq.ParquetWriter(tmp, schema) as writer:
            pending: list[pa.Table] = []
            rows = 0
            for part in parts:
                table = pq.read_table(part, schema=schema)
                pending.append(table)
                rows += table.num_rows
                while rows >= ROW_GROUP_ROWS:  # full row groups out, the rest waits for the next part
                    joined = pa.concat_tables(pending)
                    writer.write_table(joined.slice(0, ROW_GROUP_ROWS), row_group_size=ROW_GROUP_ROWS)
                    pending, rows = [joined.slice(ROW_GROUP_ROWS)], joined.num_rows - ROW_GROUP_ROWS
            if rows:
                writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
    elif suffix == ".csv":
        with pa_csv.CSVWriter(tmp, csv_schema(schema)) as writer:
            for part in parts:
                writer.write_table(csv_table(pq.read_table(part, schema=schema)))
    else:
        with open(tmp, "w", encoding="utf-8") as handle:
            for part in parts:
                for row in pq.read_table(part, schema=schema).to_pylist():
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def csv_schema(schema: pa.Schema) -> pa.Schema:
    """A CSV cell holds no list: list columns (`strategy`) become their items joined by ";" ("" for none)."""
    return pa.schema([(f.name, pa.string() if pa.types.is_list(f.type) else f.type) for f in schema])


def csv_table(table: pa.Table) -> pa.Table:
    columns = [pc.binary_join(c, ";") if pa.types.is_list(c.type) else c for c in table.columns]
    return pa.Table.from_arrays(columns, schema=csv_schema(table.schema))
