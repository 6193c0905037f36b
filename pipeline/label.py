"""Batch labelling: documents in, one labelled row per sentence out, plus a per-document summary.

- Streaming: documents are read in chunks of `label.chunk_documents`; memory stays flat on any input size.
- Resumable: each chunk is committed to `<output>.partial/chunk-NNNNNN/` by one atomic directory rename. A
  rerun with the same arguments re-reads the input, checks every committed chunk's input digest, skips it and
  labels only what is missing; a rerun with other arguments (config, model version, input) is refused rather
  than mixed in. Killed at any point, a rerun ends with the same files as an uninterrupted run.
- Atomic: final files are written under temporary names and `os.replace`d, the sentence file last.
- Nothing lost: every input document is labelled or listed in the rejects file with its reason; truncation
  (an over-long document, a sentence over the model's token limit) is a `warning` there and a flag in the row.
- Fast: duplicate sentences in a chunk are labelled once; the model is configured once
  (`configure_inference`: precision, threads, token budget) and labels through its own `predict_proba`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline.config import ConfigError, LabelConfig, SegmentConfig
from pipeline.io.atomic import atomic_path, write_text_atomic
from pipeline.io.digest import folder_digest
from pipeline.labelling import (
    REJECTED,
    SENTENCE_SCHEMA,
    SUMMARY_SCHEMA,
    WARNING,
    LabelledBatch,
    ModelInfo,
    label_batch,
    reader_reject,
    sentence_predictor,
)
from pipeline.models.base import QuantizationOutOfTolerance, SentenceModel, load_model
from pipeline.schema import Document, Sentence
from pipeline.timing import StageClock, phase

__all__ = [
    "REJECTED",
    "WARNING",
    "LabelResult",
    "LabelRunMismatch",
    "ModelInfo",
    "QuantizationOutOfTolerance",
    "label_documents",
    "model_from_folder",
]

OUTPUT_FORMATS = (".parquet", ".jsonl", ".csv")
EXIT_ALL_LABELLED = 0
EXIT_SOME_REJECTED = 3
_MANIFEST = "manifest.json"
_CHUNK_CARD = "chunk.json"
_FORMAT_VERSION = 1
# Rows per Parquet row group in the final sentence and summary files: chunks are joined into groups this large
# (a reader scans a few large groups, not one small group per chunk; columns compress better).
ROW_GROUP_ROWS = 128 * 1024

# --- results and identities ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelResult:
    """Counts and paths of a finished labelling run; `exit_code` is what the CLI returns."""

    documents: int  # input items seen: documents and reader rejects
    labelled: int  # documents with rows in the output
    sentences: int
    rejected: int  # documents listed in the rejects file and absent from the output
    warnings: int  # documents labelled only in part (truncated), listed in the rejects file as warnings
    output: Path
    summary: Path
    rejects: Path
    resumed_chunks: int = 0  # chunks found committed by an earlier, interrupted run
    quantization_disagreement: float | None = None  # measured on the check sample when quantizing
    precision: str = "float32"  # what the model ran in: float32, int8 or bf16 (see SentenceModel.precisions)
    # where the time went, in seconds: read, segment, tokenise, infer, rows, write, other, total (pipeline.timing)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """0 when every document was labelled in full; 3 when the rejects file lists anything."""
        return EXIT_SOME_REJECTED if self.rejected or self.warnings else EXIT_ALL_LABELLED


class LabelRunMismatch(ConfigError):
    """An interrupted or finished run with other arguments (or another input) is where this one would write.

    A refusal of the arguments, not a failure: the CLI prints the one line and exits 2.
    """


@dataclass(frozen=True)
class LabelPaths:
    output: Path
    summary: Path
    rejects: Path
    partial: Path
    record: Path  # the arguments a finished output was written with

    @classmethod
    def for_config(cls, cfg: LabelConfig) -> LabelPaths:
        output = Path(cfg.output)
        if output.suffix.lower() not in OUTPUT_FORMATS:
            raise ValueError(
                f"label.output {str(output)!r}: unknown format {output.suffix or '(no extension)'!r}; "
                f"use one of {', '.join(OUTPUT_FORMATS)}"
            )
        return cls(
            output=output,
            summary=output.with_name(f"{output.stem}.summary{output.suffix}"),
            rejects=Path(cfg.rejects) if cfg.rejects else output.with_name(f"{output.stem}.rejects.jsonl"),
            partial=output.with_name(f"{output.name}.partial"),
            record=output.with_name(f"{output.name}.run.json"),
        )


# --- the resumable run ----------------------------------------------------------------------------------


def _run_settings(cfg: LabelConfig, info: ModelInfo, segment_cfg: SegmentConfig) -> dict[str, Any]:
    """Everything that changes the rows; a partial run is resumed only under identical settings."""
    return {
        "format": _FORMAT_VERSION,
        "model": asdict(info),
        "label": cfg.model_dump(mode="json", exclude={"output", "rejects", "threads", "overwrite", "spark"}),
        "segment": segment_cfg.model_dump(mode="json", exclude={"input", "output", "rejects"}),
    }


def setting_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The dotted names of the settings that differ between two runs' records (`label.max_chars`)."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for k in keys for d in setting_differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".")]


def _item_digest(item: object) -> str:
    payload = item.model_dump_json() if isinstance(item, Document) else json.dumps(reader_reject(item), sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()


def _chunk_digest(items: Sequence[object]) -> str:
    digest = hashlib.sha256()
    for item in items:
        digest.update(_item_digest(item).encode())
    return digest.hexdigest()


def check_finished_output(paths: LabelPaths, settings: dict[str, Any], overwrite: bool) -> None:
    """Refuse to replace a finished output written with other arguments, unless asked to."""
    if overwrite or not (paths.output.exists() and paths.record.is_file()) or paths.partial.exists():
        return
    stored = json.loads(paths.record.read_text(encoding="utf-8"))
    changed = setting_differences(stored, settings)
    if changed:
        raise LabelRunMismatch(
            f"{paths.output}: already written by a run with other arguments (differs in {', '.join(changed)}); "
            "pass --overwrite (label.overwrite=true) to replace it, or choose another --output"
        )


def _open_partial(partial: Path, settings: dict[str, Any]) -> None:
    """Create the work folder, or check that the one there belongs to a run with the same settings."""
    manifest = partial / _MANIFEST
    if manifest.is_file():
        stored = json.loads(manifest.read_text(encoding="utf-8"))
        changed = setting_differences(stored, settings)
        if changed:
            raise LabelRunMismatch(
                f"{partial}: an interrupted run with other arguments is there "
                f"(differs in {', '.join(changed)}); rerun with the arguments it was started with, "
                f"or delete {partial} to start over"
            )
    else:
        if partial.exists():  # killed before its manifest was written: nothing in it was committed
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        write_text_atomic(manifest, json.dumps(settings, indent=2, sort_keys=True))
    for leftover in partial.glob(".chunk-*.tmp"):  # a chunk that was being written when the run was killed
        shutil.rmtree(leftover)


def _chunk_dir(partial: Path, k: int) -> Path:
    return partial / f"chunk-{k:06d}"


def _commit_chunk(partial: Path, k: int, tables: LabelledBatch, digest: str) -> dict[str, Any]:
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


class _SentenceGroups:
    """Already cut sentences, handed out by document id, chunk by chunk, as a stream in document order."""

    def __init__(self, sentences: Iterable[Sentence] | None) -> None:
        self._groups = self._documents(sentences or ())
        self._next: tuple[str, list[Sentence]] | None = next(self._groups, None)
        self.enabled = sentences is not None

    @staticmethod
    def _documents(sentences: Iterable[Sentence]) -> Iterator[tuple[str, list[Sentence]]]:
        """(doc_id, sentences) per document; a new document starts at a new id or at sentence index 0."""
        group: list[Sentence] = []
        for sentence in sentences:
            if group and (sentence.doc_id != group[0].doc_id or sentence.index == 0):
                yield group[0].doc_id, group
                group = []
            group.append(sentence)
        if group:
            yield group[0].doc_id, group

    def take(self, ids: set[str]) -> dict[str, list[Sentence]] | None:
        """The sentences of the documents `ids` that come next in the stream; the rest are segmented anew."""
        if not self.enabled:
            return None
        found: dict[str, list[Sentence]] = {}
        while self._next is not None and self._next[0] in ids:
            found.setdefault(*self._next)  # a repeated id is rejected later; keep the first
            self._next = next(self._groups, None)
        return found


def _chunks(documents: Iterable[object], size: int) -> Iterator[list[object]]:
    iterator = iter(documents)
    while True:
        with phase("read"):
            chunk = list(itertools.islice(iterator, size))
        if not chunk:
            return
        yield chunk


def _progress(show: bool, total: int | None) -> tqdm:
    """The labelling progress bar (tqdm, as in training): documents done, ETA, sentences and their rate."""
    return tqdm(total=total, desc="labelling", unit="doc", disable=not show, file=sys.stderr, dynamic_ncols=True)


def label_documents(
    cfg: LabelConfig,
    model: SentenceModel,
    model_info: ModelInfo,
    documents: Iterable[Document | Any],
    segment_cfg: SegmentConfig,
    *,
    total_documents: int | None = None,
    show_progress: bool = True,
    sentences: Iterable[Sentence] | None = None,
) -> LabelResult:
    """Label every document (and list every reject) into `cfg.output`, its summary and its rejects file.

    `documents` may hold readers' `Reject` items; they go straight to the rejects file. `total_documents` is
    for the progress bar's ETA only (default: the length of `documents`, or a count of `cfg.input`).
    `sentences`, when given, are these documents' sentences as the segment stage cut them with `segment_cfg`
    (in document order): they are labelled as they are instead of segmenting each document again.
    Rerun with the same arguments after an interruption to resume. Raises `LabelRunMismatch` when a partial
    run with other arguments is on disk, and `QuantizationOutOfTolerance` when int8 is asked for but changes
    too many labels. `LabelResult.timings` says where the time went (read, segment, tokenise, infer, rows,
    write).
    """
    clock = StageClock()
    with clock.measuring():
        result = _label_documents(
            cfg,
            model,
            model_info,
            documents,
            segment_cfg,
            total_documents=total_documents,
            show_progress=show_progress,
            sentences=sentences,
        )
    return replace(result, timings=clock.report())


def _label_documents(
    cfg: LabelConfig,
    model: SentenceModel,
    model_info: ModelInfo,
    documents: Iterable[Document | Any],
    segment_cfg: SegmentConfig,
    *,
    total_documents: int | None = None,
    show_progress: bool = True,
    sentences: Iterable[Sentence] | None = None,
) -> LabelResult:
    """The run `label_documents` describes (and times)."""
    if cfg.chunk_documents < 1:
        raise ValueError(f"label.chunk_documents must be at least 1, got {cfg.chunk_documents}")
    paths = LabelPaths.for_config(cfg)
    partial = paths.partial
    partial.parent.mkdir(parents=True, exist_ok=True)
    settings = _run_settings(cfg, model_info, segment_cfg)
    check_finished_output(paths, settings, cfg.overwrite)
    _open_partial(partial, settings)
    predict = sentence_predictor(model, cfg)
    if total_documents is None and show_progress:
        total_documents = len(documents) if isinstance(documents, Sequence) else count_documents(cfg.input)

    totals = {"documents": 0, "labelled": 0, "sentences": 0, "rejected": 0, "warnings": 0}
    seen_ids: set[str] = set()
    segmented = _SentenceGroups(sentences)
    resumed = 0
    n_chunks = 0
    with _progress(show_progress, total_documents) as progress:
        labelled_sentences, labelling_seconds = 0, 0.0
        for k, items in enumerate(_chunks(documents, cfg.chunk_documents)):
            n_chunks = k + 1
            with phase("read"):
                digest = _chunk_digest(items)
            done = _chunk_dir(partial, k)
            if done.is_dir():
                card = json.loads((done / _CHUNK_CARD).read_text(encoding="utf-8"))
                if card["digest"] != digest:
                    raise LabelRunMismatch(
                        f"{partial}: the input differs from the interrupted run's at documents "
                        f"{k * cfg.chunk_documents}..{k * cfg.chunk_documents + len(items) - 1}; "
                        f"delete {partial} to start over"
                    )
                seen_ids.update(item.id for item in items if isinstance(item, Document))
                resumed += 1
            else:
                started = time.perf_counter()
                ids = {item.id for item in items if isinstance(item, Document)}
                tables = label_batch(
                    items,
                    predict,
                    model_info,
                    segment_cfg,
                    max_chars=cfg.max_chars,
                    seen_ids=seen_ids,
                    segmented=segmented.take(ids),
                )
                with phase("write"):
                    card = _commit_chunk(partial, k, tables, digest)
                labelled_sentences += card["sentences"]
                labelling_seconds += time.perf_counter() - started
            for key in totals:
                totals[key] += card[key]
            rate = f"{labelled_sentences / labelling_seconds:.0f}" if labelling_seconds > 0 else "-"
            progress.set_postfix(sentences=totals["sentences"], per_second=rate, refresh=False)
            progress.update(len(items))

    extra = _chunk_dir(partial, n_chunks)
    if extra.is_dir():
        raise LabelRunMismatch(
            f"{partial}: the interrupted run had more input than this one ({extra.name} is committed but the "
            f"input ended after {n_chunks} chunk(s)); delete {partial} to start over"
        )
    with phase("write"):
        _finish(partial, n_chunks, paths)
        shutil.rmtree(partial)
    inference = model.inference_report()
    return LabelResult(
        **totals,
        output=paths.output,
        summary=paths.summary,
        rejects=paths.rejects,
        resumed_chunks=resumed,
        quantization_disagreement=inference.disagreement,
        precision=inference.precision,
    )


def count_documents(path: Path) -> int | None:
    """About how many documents `path` holds (JSONL lines, files in a folder), for an ETA; None if unknown."""
    from pipeline.io.jsonl import is_jsonl, iter_lines

    path = Path(path)
    try:
        if path.is_file():
            return sum(1 for _ in iter_lines(path)) if is_jsonl(path) else 1
        if path.is_dir():
            files = [p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")]
            return sum(sum(1 for _ in iter_lines(p)) if is_jsonl(p) else 1 for p in files)
    except (OSError, EOFError):
        return None
    return None


# --- the final files ------------------------------------------------------------------------------------


def _finish(partial: Path, n_chunks: int, paths: LabelPaths) -> None:
    """Join the committed chunks into the final files; the sentence file is replaced last."""
    chunks = [_chunk_dir(partial, k) for k in range(n_chunks)]
    rejects = "".join((c / "rejects.jsonl").read_text(encoding="utf-8") for c in chunks)
    paths.rejects.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(paths.rejects, rejects)
    write_table_parts([c / "summary.parquet" for c in chunks], SUMMARY_SCHEMA, paths.summary)
    write_text_atomic(paths.record, (partial / _MANIFEST).read_text(encoding="utf-8"))
    write_table_parts([c / "sentences.parquet" for c in chunks], SENTENCE_SCHEMA, paths.output)


def write_table_parts(parts: Sequence[Path], schema: pa.Schema, target: Path) -> None:
    """Stream parquet parts into one .parquet, .jsonl or .csv file, written aside and renamed into place."""
    suffix = target.suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise ValueError(f"{target}: unknown format {suffix!r}; use one of {', '.join(OUTPUT_FORMATS)}")
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
        with pa_csv.CSVWriter(tmp, schema) as writer:
            for part in parts:
                writer.write_table(pq.read_table(part, schema=schema))
    else:
        with open(tmp, "w", encoding="utf-8") as handle:
            for part in parts:
                for row in pq.read_table(part, schema=schema).to_pylist():
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")


# --- finding the model ----------------------------------------------------------------------------------


def model_from_folder(path: str | Path) -> tuple[SentenceModel, ModelInfo]:
    """Load a saved model folder; its version is a digest of its files (registry URIs: `registry.resolve_model`)."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"label.model {str(path)!r}: no such model folder, and not a models:/ or runs:/ URI")
    info = ModelInfo(name=folder.resolve().name, version=folder_digest(folder), uri=str(path))
    return load_model(folder), info
