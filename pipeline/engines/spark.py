"""Batch labelling on Apache Spark: the local engine's rows, summaries and rejects, from many cores or machines.

- Reading: the driver lists the input's sources (a JSONL or Parquet file, a text file; `document_sources`);
  each source is read on an executor by the project's own readers, so every reject has the local reason.
- One labelling path: documents are labelled in `mapInArrow` by the same function as the local engine, in
  batches of `label.spark.batch_documents`; a repeated id is rejected as locally (the first in input order
  wins). The model folder is shipped once (`SparkContext.addFile`) and loaded once per Python worker.
- Nothing lost, nothing fails the job: a document whose labelling raises is listed in the rejects with why.
- Safe reruns: all work goes under `<output>.partial/` (a manifest of the settings, the labelled rows, the
  final tables) and is moved into place by rename, the sentence table last. Killed anywhere (an executor,
  the driver), a rerun with the same arguments ends with the same files; other arguments are refused, into
  an interrupted run and (unless `label.overwrite`) into a finished output, as the local engine does: the
  settings are kept beside the output (`<output>.run.json`).
- Paths: Hadoop reads a path as a glob pattern (`[1]`, `*`, `?`, `{a,b}`), so every path Spark reads is
  escaped (`hadoop_literal`); an output name with those characters works like any other.
- Output: `label.output` is a Parquet dataset (a folder of part files, in input order) with the local
  engine's columns and types; the summary likewise; the rejects one JSONL file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.config import LabelConfig, SegmentConfig, SparkConfig
from pipeline.io.documents import Source, document_sources, read_source
from pipeline.io.rejects import Reject
from pipeline.label import LabelPaths, LabelResult, LabelRunMismatch, check_finished_output, setting_differences
from pipeline.labelling import (
    REJECTED,
    SENTENCE_SCHEMA,
    SUMMARY_SCHEMA,
    WARNING,
    LabelledBatch,
    ModelInfo,
    label_batch,
    reader_reject,
    reject_row,
    sentence_predictor,
)
from pipeline.registry import resolve_model
from pipeline.schema import Document
from pipeline.screening import DUPLICATE_ID, screen_document

# A test hook for fault injection: when this environment variable names a file that exists, the Python
# worker that first sees it deletes it and kills itself (SIGKILL) before labelling its next batch.
KILL_FILE_ENV = "PIPELINE_SPARK_KILL_FILE"
_MANIFEST = "manifest.json"
_FORMAT_VERSION = 1
REJECT_COLUMNS = ("id", "source", "reason", "severity")
_ORDER = ("file_no", "item_no", "seq")  # input order: source, item within it, row within the item


@dataclass(frozen=True)
class SparkLabelResult(LabelResult):
    """A finished Spark labelling run: the local result's counts and paths, plus where and how fast."""

    model: ModelInfo | None = None
    master: str = ""
    ui_url: str | None = None
    startup_seconds: float = 0.0  # starting the SparkSession (0 when one was handed in)
    labelling_seconds: float = 0.0  # the labelling job: reading, segmenting, labelling, staging
    rows_per_second: float = 0.0  # sentences per second of the labelling job


# --- the session ----------------------------------------------------------------------------------------


def spark_session(cfg: SparkConfig, app_name: str = "ct-pipeline label") -> Any:
    """A SparkSession for `cfg.master`, or the platform's (spark-submit, Databricks) when there is one.

    Local masters stay on 127.0.0.1 and run Python workers with this interpreter, so the project is there.
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise RuntimeError(
            "label.engine=spark needs pyspark: pip install 'ct-policy-pipeline[spark]' (and Java 17+)"
        ) from None
    builder = SparkSession.builder.appName(app_name)
    # under spark-submit (or in a Databricks notebook or job) the platform has chosen the master already
    launched = bool(os.environ.get("PYSPARK_GATEWAY_PORT")) or SparkSession.getActiveSession() is not None
    if not launched:
        builder = builder.master(cfg.master)
    if not launched and cfg.master.startswith("local"):
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = builder.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
    shuffle = cfg.partitions or (os.cpu_count() or 2) * 2
    builder = builder.config("spark.sql.shuffle.partitions", str(shuffle))
    builder = builder.config("spark.ui.showConsoleProgress", "true")
    for key, value in cfg.conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session


# --- on the executors -----------------------------------------------------------------------------------


def _read_items(numbered: tuple[int, Source]) -> Iterator[tuple[Any, ...]]:
    """One source's items as rows: (file_no, item_no, doc_id, screened, document JSON, reject JSON)."""
    file_no, source = numbered
    for item_no, item in enumerate(read_source(source)):
        if isinstance(item, Document):
            ok = screen_document(item, max_chars=None) is None
            yield file_no, item_no, item.id, ok, item.model_dump_json(), None
        else:
            yield file_no, item_no, None, False, None, item.model_dump_json()


_ITEMS_DDL = "file_no long, item_no long, doc_id string, screened boolean, document string, reject string"

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


class _LabelPartitions:
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

_SPARK_TYPES = {pa.string(): "string", pa.int64(): "long", pa.float64(): "double", pa.bool_(): "boolean"}


def _combined_fields() -> dict[str, str]:
    """One schema for the three tables' rows, so one job writes them all; shared columns share a type."""
    fields = {"table": "string", "file_no": "long", "item_no": "long", "seq": "long"}
    reject_schema = pa.schema([(c, pa.string()) for c in REJECT_COLUMNS])
    for schema in (SENTENCE_SCHEMA, SUMMARY_SCHEMA, reject_schema):
        for f in schema:
            kind = _SPARK_TYPES[f.type]
            if fields.setdefault(f.name, kind) != kind:
                raise TypeError(f"column {f.name!r} has two types in the labelled tables")
    return fields


_COMBINED_COLUMNS = _combined_fields()
_COMBINED_DDL = ", ".join(f"`{name}` {kind}" for name, kind in _COMBINED_COLUMNS.items())
_ARROW_TYPES = {kind: arrow for arrow, kind in _SPARK_TYPES.items()}
_COMBINED_SCHEMA = pa.schema([(name, _ARROW_TYPES[kind]) for name, kind in _COMBINED_COLUMNS.items()])


# --- on the driver --------------------------------------------------------------------------------------


def _settings(cfg: LabelConfig, info: ModelInfo, segment_cfg: SegmentConfig) -> dict[str, Any]:
    """Everything that changes the rows (not where or how Spark runs); a rerun must match it."""
    return {
        "format": _FORMAT_VERSION,
        "engine": "spark",
        "model": asdict(info),
        "label": cfg.model_dump(mode="json", exclude={"output", "rejects", "threads", "overwrite", "engine", "spark"}),
        "segment": segment_cfg.model_dump(mode="json", exclude={"input", "output", "rejects"}),
    }


def _open_partial(partial: Path, settings: dict[str, Any]) -> None:
    """Create `<output>.partial/`, or check that the one there was started with the same settings."""
    manifest = partial / _MANIFEST
    if manifest.is_file():
        stored = json.loads(manifest.read_text(encoding="utf-8"))
        changed = setting_differences(stored, settings)
        if changed:
            raise LabelRunMismatch(
                f"{partial}: an interrupted run with other arguments is there (differs in {', '.join(changed)}); "
                f"rerun with the arguments it was started with, or delete {partial} to start over"
            )
        return
    if partial.exists():  # killed before its manifest was written: nothing in it counts
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    tmp = partial / f".{_MANIFEST}.tmp"
    tmp.write_text(json.dumps(settings, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, manifest)


_HADOOP_GLOB = re.compile(r"([\\{}\[\]*?])")


def hadoop_literal(path: Path) -> str:
    """`path` for Spark's readers, which expand glob patterns: `[`, `]`, `*`, `?`, `{`, `}`, `\\` escaped.

    (Writers take a path as it is; only reading globs.)
    """
    return _HADOOP_GLOB.sub(r"\\\1", str(path))


def _model_folder(cfg: LabelConfig, download_dir: Path) -> tuple[Path, ModelInfo]:
    """The model's local folder (downloaded and pinned for registry URIs) and its identity."""
    _, info = resolve_model(cfg.model, download_dir=download_dir)
    if not cfg.model.startswith(("models:/", "runs:/")):
        return Path(cfg.model).expanduser().resolve(), info
    cards = sorted(download_dir.rglob("model.json"), key=lambda p: len(p.parts))
    if not cards:
        raise FileNotFoundError(f"label.model {cfg.model!r}: the download holds no model.json")
    return cards[0].parent, info


def _label_job(
    session: Any,
    sources: list[Source],
    folder: Path,
    info: ModelInfo,
    cfg: LabelConfig,
    segment_cfg: SegmentConfig,
    target: Path,
) -> None:
    """Read, screen for repeated ids, label and stage every item under `target` (one folder per table)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    sc = session.sparkContext
    sc.addFile(str(folder), recursive=True)
    partitions = cfg.spark.partitions or sc.defaultParallelism
    session.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.spark.batch_documents))
    numbered = sc.parallelize(list(enumerate(sources)), max(1, min(len(sources), partitions)))
    items = session.createDataFrame(numbered.flatMap(_read_items), _ITEMS_DDL)
    # a usable document whose id an earlier usable one has is rejected, as the local engine does
    key = F.when(F.col("screened"), F.col("doc_id"))
    rank = F.row_number().over(Window.partitionBy(key).orderBy("file_no", "item_no"))
    items = items.withColumn("duplicate", key.isNotNull() & (rank > 1))
    labelled = (
        items.repartition(partitions, "file_no", "item_no")
        .sortWithinPartitions("file_no", "item_no")
        .mapInArrow(_LabelPartitions(folder.name, info, cfg, segment_cfg), _COMBINED_DDL)
    )
    labelled.write.mode("overwrite").partitionBy("table").parquet(str(target))


def _write_table(session: Any, staged: Path, schema: pa.Schema, target: Path) -> int:
    """One staged table, in input order, with exactly `schema`'s columns and types, as a Parquet dataset."""
    from pyspark.sql import functions as F

    frame = session.read.parquet(hadoop_literal(staged)) if staged.exists() else None
    columns = [F.col(f"`{f.name}`").cast(_SPARK_TYPES[f.type]).alias(f.name) for f in schema]
    if frame is None:
        frame = session.createDataFrame([], ", ".join(f"`{f.name}` {_SPARK_TYPES[f.type]}" for f in schema))
    else:
        frame = frame.orderBy(*_ORDER).select(*columns)
    frame.write.mode("overwrite").parquet(str(target))
    return session.read.parquet(hadoop_literal(target)).count()


def _write_rejects(session: Any, staged: Path, target: Path) -> list[dict[str, Any]]:
    """The staged rejects in input order as one JSONL file (as the local engine writes it)."""
    rows: list[dict[str, Any]] = []
    if staged.exists():
        frame = session.read.parquet(hadoop_literal(staged)).orderBy(*_ORDER).select(*REJECT_COLUMNS)
        rows = [row.asDict() for row in frame.toLocalIterator()]
    tmp = target.with_name(f".{target.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps({c: row[c] for c in REJECT_COLUMNS}, ensure_ascii=False) + "\n")
    return rows


def _move_into_place(source: Path, target: Path) -> None:
    """Rename `source` to `target`, replacing a file or folder there (the old one is removed after)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = target.with_name(f".{target.name}.old")
    if old.exists():
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    if target.exists():
        os.rename(target, old)
    os.rename(source, target)
    if old.exists():
        shutil.rmtree(old) if old.is_dir() else old.unlink()


def label_documents_spark(
    cfg: LabelConfig, segment_cfg: SegmentConfig, *, session: Any = None, log: Any = print
) -> SparkLabelResult:
    """Label `cfg.input` on Spark into `cfg.output` (a Parquet dataset), its summary and its rejects file.

    `session`: a SparkSession to use (default: one for `cfg.spark`, stopped at the end). Raises
    `LabelRunMismatch` when `<output>.partial/` holds a run started with other arguments.
    """
    paths = LabelPaths.for_config(cfg)
    if paths.output.suffix.lower() != ".parquet":
        raise ValueError(
            f"label.output {str(paths.output)!r}: label.engine=spark writes a Parquet dataset; use a .parquet output"
        )
    sources = document_sources(Path(cfg.input))
    partial = paths.partial
    with tempfile.TemporaryDirectory(prefix="ct-label-model-") as download:
        folder, info = _model_folder(cfg, Path(download))
        partial.parent.mkdir(parents=True, exist_ok=True)
        settings = _settings(cfg, info, segment_cfg)
        check_finished_output(paths, settings, cfg.overwrite)  # before Spark starts: a refusal is quick
        _open_partial(partial, settings)
        started = time.perf_counter()
        own_session = session is None
        session = session or spark_session(cfg.spark)
        startup = time.perf_counter() - started if own_session else 0.0
        ui_url = session.sparkContext.uiWebUrl
        log(f"Spark {session.version} on {session.sparkContext.master}; progress: {ui_url or '(UI off)'}")
        try:
            staged = partial / "labelled"
            started = time.perf_counter()
            if not (staged / "_SUCCESS").exists():  # a rerun after the labelling job finished skips it
                _label_job(session, sources, folder, info, cfg, segment_cfg, staged)
            seconds = time.perf_counter() - started
            final = partial / "final"
            final.mkdir(exist_ok=True)
            sentences = _write_table(session, staged / "table=sentence", SENTENCE_SCHEMA, final / "sentences")
            labelled = _write_table(session, staged / "table=summary", SUMMARY_SCHEMA, final / "summary")
            rejects = _write_rejects(session, staged / "table=reject", final / "rejects.jsonl")
            (final / "run.json").write_text((partial / _MANIFEST).read_text(encoding="utf-8"), encoding="utf-8")
        finally:
            if own_session:
                session.stop()
    _move_into_place(final / ".rejects.jsonl.tmp", paths.rejects)
    _move_into_place(final / "summary", paths.summary)
    _move_into_place(final / "run.json", paths.record)  # the settings, for a rerun's check
    _move_into_place(final / "sentences", paths.output)  # last: its presence means the run is complete
    shutil.rmtree(partial)
    rejected = sum(1 for r in rejects if r["severity"] == REJECTED)
    rate = sentences / seconds if seconds > 0 else 0.0
    log(f"labelled {sentences} sentences in {seconds:.1f} s ({rate:.0f} sentences/s); Spark start-up {startup:.1f} s")
    return SparkLabelResult(
        documents=labelled + rejected,
        labelled=labelled,
        sentences=sentences,
        rejected=rejected,
        warnings=len({r["id"] for r in rejects if r["severity"] == WARNING}),
        output=paths.output,
        summary=paths.summary,
        rejects=paths.rejects,
        model=info,
        master=cfg.spark.master,
        ui_url=ui_url,
        startup_seconds=startup,
        labelling_seconds=seconds,
        rows_per_second=rate,
    )
