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

Where the files go and the settings a rerun is checked against: `pipeline.label_output`; the chunk store:
`pipeline.label_chunks`.
"""

from __future__ import annotations

import itertools
import shutil
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipeline.config_sections import LabelConfig, SegmentConfig
from pipeline.io.digest import folder_digest
from pipeline.label_chunks import chunk_digest, commit_chunk, committed_chunk, discard_unfinished_chunks, join_chunks
from pipeline.label_output import LabelPaths, LabelResult, check_finished_output, open_work_folder, run_settings
from pipeline.labelling import ModelInfo, label_batch, sentence_predictor
from pipeline.models.base import SentenceModel, load_model
from pipeline.schema import Document, Sentence
from pipeline.timing import StageClock, phase


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
    if cfg.chunk_documents < 1:
        raise ValueError(f"label.chunk_documents must be at least 1, got {cfg.chunk_documents}")
    clock = StageClock()
    with clock.measuring():
        paths = LabelPaths.for_config(cfg)
        partial = paths.partial
        partial.parent.mkdir(parents=True, exist_ok=True)
        settings = run_settings(cfg, model_info, segment_cfg)
        check_finished_output(paths, settings, cfg.overwrite)
        open_work_folder(partial, settings)
        discard_unfinished_chunks(partial)
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
                    digest = chunk_digest(items)
                card = committed_chunk(partial, k, digest, k * cfg.chunk_documents, len(items))
                if card is not None:
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
                        card = commit_chunk(partial, k, tables, digest)
                    labelled_sentences += card["sentences"]
                    labelling_seconds += time.perf_counter() - started
                for key in totals:
                    totals[key] += card[key]
                rate = f"{labelled_sentences / labelling_seconds:.0f}" if labelling_seconds > 0 else "-"
                progress.set_postfix(sentences=totals["sentences"], per_second=rate, refresh=False)
                progress.update(len(items))

        with phase("write"):
            join_chunks(partial, n_chunks, paths)
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
        timings=clock.report(),
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


# --- finding the model ----------------------------------------------------------------------------------


def model_from_folder(path: str | Path) -> tuple[SentenceModel, ModelInfo]:
    """Load a saved model folder; its version is a digest of its files (registry URIs: `registry.resolve_model`)."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"label.model {str(path)!r}: no such model folder, and not a models:/ or runs:/ URI")
    info = ModelInfo(name=folder.resolve().name, version=folder_digest(folder), uri=str(path))
    return load_model(folder), info
