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
- What runs on the executors is `pipeline.engines.spark_tasks`; this module is the driver.
- Output: `label.output` is a Parquet dataset (a folder of part files, in input order) with the local
  engine's columns and types; the summary likewise; the rejects one JSONL file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.config_sections import LabelConfig, SegmentConfig, SparkConfig
from pipeline.engines.spark_tasks import (
    COMBINED_DDL,
    ITEMS_DDL,
    REJECT_COLUMNS,
    SPARK_TYPES,
    LabelPartitions,
    read_items,
)
from pipeline.io.documents import Source, document_sources
from pipeline.label_output import (
    MANIFEST,
    LabelPaths,
    LabelResult,
    check_finished_output,
    open_work_folder,
    run_settings,
)
from pipeline.labelling import REJECTED, SENTENCE_SCHEMA, SUMMARY_SCHEMA, WARNING, ModelInfo
from pipeline.registry import resolve_model

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


# --- on the driver --------------------------------------------------------------------------------------


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
    items = session.createDataFrame(numbered.flatMap(read_items), ITEMS_DDL)
    # a usable document whose id an earlier usable one has is rejected, as the local engine does
    key = F.when(F.col("screened"), F.col("doc_id"))
    rank = F.row_number().over(Window.partitionBy(key).orderBy("file_no", "item_no"))
    items = items.withColumn("duplicate", key.isNotNull() & (rank > 1))
    labelled = (
        items.repartition(partitions, "file_no", "item_no")
        .sortWithinPartitions("file_no", "item_no")
        .mapInArrow(LabelPartitions(folder.name, info, cfg, segment_cfg), COMBINED_DDL)
    )
    labelled.write.mode("overwrite").partitionBy("table").parquet(str(target))


def _write_table(session: Any, staged: Path, schema: pa.Schema, target: Path) -> int:
    """One staged table, in input order, with exactly `schema`'s columns and types, as a Parquet dataset."""
    from pyspark.sql import functions as F

    frame = session.read.parquet(hadoop_literal(staged)) if staged.exists() else None
    columns = [F.col(f"`{f.name}`").cast(SPARK_TYPES[f.type]).alias(f.name) for f in schema]
    if frame is None:
        frame = session.createDataFrame([], ", ".join(f"`{f.name}` {SPARK_TYPES[f.type]}" for f in schema))
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
        # the settings name this engine whatever `cfg.engine` says: this function is the Spark engine
        settings = run_settings(cfg.model_copy(update={"engine": "spark"}), info, segment_cfg)
        check_finished_output(paths, settings, cfg.overwrite)  # before Spark starts: a refusal is quick
        open_work_folder(partial, settings)
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
            (final / "run.json").write_text((partial / MANIFEST).read_text(encoding="utf-8"), encoding="utf-8")
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
