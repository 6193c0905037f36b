"""What the Spark engine runs on the executors: a source's items as rows, and the `mapInArrow` function that
labels them with the one labelling function and hands back the three tables' rows in one combined schema."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.config_sections import LabelConfig, SegmentConfig
from pipeline.io.documents import Source, read_source
from pipeline.io.rejects import Reject
from pipeline.labelling import (
    SENTENCE_SCHEMA,
    SUMMARY_SCHEMA,
    LabelledBatch,
    ModelInfo,
    label_batch,
    reader_reject,
    reject_row,
    sentence_predictor,
)
from pipeline.schema import Document
from pipeline.screening import DUPLICATE_ID, screen_document

# A test hook for fault injection: when this environment variable names a file that exists, the Python
# worker that first sees it deletes it and kills itself (SIGKILL) before labelling its next batch.
KILL_FILE_ENV = "PIPELINE_SPARK_KILL_FILE"
REJECT_COLUMNS = ("id", "source", "reason", "severity")


def read_items(numbered: tuple[int, Source]) -> Iterator[tuple[Any, ...]]:
    """One source's items as rows: (file_no, item_no, doc_id, screened, document JSON, reject JSON)."""
    file_no, source = numbered
    for item_no, item in enumerate(read_source(source)):
        if isinstance(item, Document):
            ok = screen_document(item, max_chars=None) is None
            yield file_no, item_no, item.id, ok, item.model_dump_json(), None
        else:
            yield file_no, item_no, None, False, None, item.model_dump_json()


ITEMS_DDL = "file_no long, item_no long, doc_id string, screened boolean, document string, reject string"

# Python worker state: models by folder, loaded on first use and kept while the worker lives.
_LOADED: dict[str, Any] = {}


def _predictor(folder_name: str, cfg: LabelConfig) -> Any:
    """The labelling predictor for the shipped model folder, built once per Python worker."""
    if folder_name not in _LOADED:
        from pyspark import SparkFiles

        from pipeline.models.base import load_model

        _LOADED[folder_name] = sentence_predictor(load_model(Path(SparkFiles.get(folder_name))), cfg)
    return _LOADED[folder_name]


def _maybe_die() -> None:
    """Fault injection for tests (see KILL_FILE_ENV): one worker dies as a killed executor would."""
    path = os.environ.get(KILL_FILE_ENV)
    if path and os.path.exists(path):
        try:
            os.unlink(path)
        except FileNotFoundError:  # another worker won the race
            return
        os.kill(os.getpid(), signal.SIGKILL)


def _label_documents_batch(
    items: Sequence[Document], predict: Any, info: ModelInfo, cfg: LabelConfig, segment_cfg: SegmentConfig
) -> LabelledBatch:
    """The one labelling function, called as the local engine calls it (repeated ids are settled before)."""
    return label_batch(items, predict, info, segment_cfg, max_chars=cfg.max_chars)


class LabelPartitions:
    """The `mapInArrow` function: Arrow batches of items in, rows of the three tables (tagged `table`) out."""

    def __init__(self, folder_name: str, info: ModelInfo, cfg: LabelConfig, segment_cfg: SegmentConfig) -> None:
        self.folder_name, self.info, self.cfg, self.segment_cfg = folder_name, info, cfg, segment_cfg

    def __call__(self, frames: Iterator[Any]) -> Iterator[Any]:
        size = self.cfg.spark.batch_documents
        pending: list[dict[str, Any]] = []
        for batch in frames:
            pending.extend(batch.to_pylist())
            while len(pending) >= size:
                yield self._label(pending[:size])
                pending = pending[size:]
        if pending:
            yield self._label(pending)

    def _label(self, rows: list[dict[str, Any]]) -> pa.RecordBatch:
        _maybe_die()
        out: list[dict[str, Any]] = []
        documents: list[tuple[tuple[int, int], Document]] = []
        for row in rows:
            at = (int(row["file_no"]), int(row["item_no"]))
            if row["reject"] is not None:
                out.append(_tagged("reject", at, 0, reader_reject(Reject.model_validate_json(row["reject"]))))
            elif row["duplicate"]:
                out.append(_tagged("reject", at, 0, reject_row(str(row["doc_id"]), DUPLICATE_ID)))
            else:
                documents.append((at, Document.model_validate_json(row["document"])))
        if documents:
            out.extend(self._label_documents(documents))
        return pa.RecordBatch.from_pylist(out, schema=_COMBINED_SCHEMA)

    def _label_documents(self, documents: list[tuple[tuple[int, int], Document]]) -> list[dict[str, Any]]:
        predict = _predictor(self.folder_name, self.cfg)
        try:
            return _tables_rows(
                _label_documents_batch([d for _, d in documents], predict, self.info, self.cfg, self.segment_cfg),
                documents,
            )
        except Exception:  # find the document that fails; it goes to the rejects, the others are labelled
            out: list[dict[str, Any]] = []
            for at, document in documents:
                try:
                    batch = _label_documents_batch([document], predict, self.info, self.cfg, self.segment_cfg)
                    out.extend(_tables_rows(batch, [(at, document)]))
                except Exception as exc:
                    reason = f"labelling failed: {type(exc).__name__}: {exc}"
                    out.append(_tagged("reject", at, 0, reject_row(document.id, reason)))
            return out


def _tagged(table: str, at: tuple[int, int], seq: int, row: dict[str, Any]) -> dict[str, Any]:
    return {"table": table, "file_no": at[0], "item_no": at[1], "seq": seq, **row}


def _tables_rows(batch: LabelledBatch, documents: list[tuple[tuple[int, int], Document]]) -> list[dict[str, Any]]:
    """The labelled batch's three tables as tagged rows, each with its document's place in the input."""
    first: dict[str, tuple[int, int]] = {}
    for at, document in documents:
        first.setdefault(document.id, at)
    out = [_tagged("sentence", first[r["doc_id"]], r["index"], r) for r in batch.sentences.to_pylist()]
    out += [_tagged("summary", first[r["doc_id"]], 0, r) for r in batch.summary.to_pylist()]
    out += [_tagged("reject", first[r["id"]], seq, r) for seq, r in enumerate(batch.rejects)]
    return out


# --- the combined output schema -------------------------------------------------------------------------

SPARK_TYPES = {
    pa.string(): "string",
    pa.int64(): "long",
    pa.float64(): "double",
    pa.bool_(): "boolean",
    pa.list_(pa.string()): "array<string>",
}


def _combined_fields() -> dict[str, str]:
    """One schema for the three tables' rows, so one job writes them all; shared columns share a type."""
    fields = {"table": "string", "file_no": "long", "item_no": "long", "seq": "long"}
    reject_schema = pa.schema([(c, pa.string()) for c in REJECT_COLUMNS])
    for schema in (SENTENCE_SCHEMA, SUMMARY_SCHEMA, reject_schema):
        for f in schema:
            kind = SPARK_TYPES[f.type]
            if fields.setdefault(f.name, kind) != kind:
                raise TypeError(f"column {f.name!r} has two types in the labelled tables")
    return fields


_COMBINED_COLUMNS = _combined_fields()
COMBINED_DDL = ", ".join(f"`{name}` {kind}" for name, kind in _COMBINED_COLUMNS.items())
_ARROW_TYPES = {kind: arrow for arrow, kind in SPARK_TYPES.items()}
_COMBINED_SCHEMA = pa.schema([(name, _ARROW_TYPES[kind]) for name, kind in _COMBINED_COLUMNS.items()])
