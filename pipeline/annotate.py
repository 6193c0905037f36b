"""The annotation round trip: export sentences for annotators, import their labels, measure agreement.

The exchange format is a CSV a spreadsheet opens directly (UTF-8 with a byte-order mark so Excel shows å, ä,
ö): one row per sentence with its neighbours, optionally the current model's guess and uncertainty (most
uncertain first, so annotators' time goes where the model learns most), and two columns to fill in:
`strategy` (labels separated by ";" – empty means no dimension) and `commitment`. A row whose `commitment` is
empty is not yet annotated and is skipped on import.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import ValidationError

from pipeline.io.atomic import atomic_path
from pipeline.io.jsonl import BadLine, read_jsonl
from pipeline.labelled_data import (
    DataProblem,
    LabelledDataError,
    check_labelled_file,
    in_document_order,
    read_labelled,
    sentence_texts,
    write_labelled,
)
from pipeline.schema import COMMITMENT_LABELS, STRATEGY_LABELS, HeadProbabilities, LabelledSentence, Sentence

if TYPE_CHECKING:
    from rich.table import Table

    from pipeline.models.base import SentenceModel

EXPORT_COLUMNS: tuple[str, ...] = (
    "id",
    "doc_id",
    "previous",
    "text",
    "next",
    "predicted_strategy",
    "predicted_commitment",
    "uncertainty",
    "strategy",
    "commitment",
)
_REQUIRED_ON_IMPORT = ("id", "doc_id", "text", "strategy", "commitment")
_SEPARATORS = re.compile(r"[;,|\s]+")
STRATEGY_SEPARATOR = ";"


# --- export ------------------------------------------------------------------------------------------


def sentence_uncertainty(probs: HeadProbabilities) -> np.ndarray:
    """Per-sentence uncertainty in [0, 1]: the mean of the commitment entropy (normalised by log 5) and the
    mean binary entropy of the three strategy decisions. 0 = sure of everything, 1 = coin flips."""
    eps = 1e-12
    c = np.clip(probs.commitment, eps, 1.0)
    commitment = -(c * np.log(c)).sum(axis=1) / math.log(c.shape[1])
    s = np.clip(probs.strategy, eps, 1 - eps)
    strategy = (-(s * np.log2(s) + (1 - s) * np.log2(1 - s))).mean(axis=1)
    return np.clip((commitment + strategy) / 2, 0.0, 1.0)


def _as_labelled(sentence: LabelledSentence | Sentence) -> LabelledSentence:
    """Unlabelled segmenter output gets the gold-style id `doc_id#index` and empty labels for ordering."""
    if isinstance(sentence, LabelledSentence):
        return sentence
    return LabelledSentence(
        id=f"{sentence.doc_id}#{sentence.index}",
        doc_id=sentence.doc_id,
        text=sentence.text,
        strategy=[],
        commitment="none",
        sentence_index=sentence.index,
    )


def annotation_rows(
    sentences: Sequence[LabelledSentence | Sentence],
    model: SentenceModel | None = None,
    *,
    include_labels: bool = False,
    limit: int | None = None,
) -> list[dict[str, str]]:
    """Rows for the annotation CSV (keys `EXPORT_COLUMNS`).

    Sentences are put in document order to find their neighbours. With a model, its predictions fill
    `predicted_*` and `uncertainty`, and rows come most uncertain first; `limit` keeps the first rows.
    `include_labels` pre-fills `strategy`/`commitment` from labelled input (for review rather than blind
    annotation).
    """
    ordered = in_document_order([_as_labelled(s) for s in sentences])
    labelled_ids = {s.id for s in sentences if isinstance(s, LabelledSentence)} if include_labels else set()
    texts = sentence_texts(ordered)
    rows = [
        {
            "id": s.id,
            "doc_id": s.doc_id,
            "previous": t.previous,
            "text": s.text,
            "next": t.next,
            "predicted_strategy": "",
            "predicted_commitment": "",
            "uncertainty": "",
            "strategy": STRATEGY_SEPARATOR.join(s.strategy) if s.id in labelled_ids else "",
            "commitment": s.commitment if s.id in labelled_ids else "",
        }
        for s, t in zip(ordered, texts, strict=True)
    ]
    if model is not None and rows:
        probs = model.predict_proba(texts)
        uncertainty = sentence_uncertainty(probs)
        for row, strategy, commitment, u in zip(
            rows, probs.strategy_labels(), probs.commitment_labels(), uncertainty, strict=True
        ):
            row["predicted_strategy"] = STRATEGY_SEPARATOR.join(strategy)
            row["predicted_commitment"] = commitment
            row["uncertainty"] = f"{u:.4f}"
        order = np.argsort(-uncertainty, kind="stable")
        rows = [rows[i] for i in order]
    return rows[:limit] if limit is not None else rows


def write_annotation_csv(rows: Sequence[dict[str, str]], path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=EXPORT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def export_for_annotation(
    sentences: Sequence[LabelledSentence | Sentence],
    path: Path | str,
    model: SentenceModel | None = None,
    *,
    include_labels: bool = False,
    limit: int | None = None,
) -> Path:
    """`pipeline annotate export`: write the annotation CSV for `sentences` (see `annotation_rows`)."""
    rows = annotation_rows(sentences, model, include_labels=include_labels, limit=limit)
    return write_annotation_csv(rows, path)


def read_sentences(path: Path | str) -> list[LabelledSentence | Sentence]:
    """Sentences to export from a JSONL file: segmenter output (`Sentence`) or labelled sentences."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: sentences file not found")
    out: list[LabelledSentence | Sentence] = []
    problems: list[DataProblem] = []
    for number, record in read_jsonl(path):
        if isinstance(record, BadLine):
            problems.append(DataProblem(str(path), number, f"not a sentence: {record.reason}"))
            continue
        try:
            kind = LabelledSentence if isinstance(record, dict) and "commitment" in record else Sentence
            out.append(kind.model_validate(record))
        except ValidationError as exc:
            problems.append(DataProblem(str(path), number, f"not a sentence: {str(exc).splitlines()[0]}"))
    if problems:
        raise LabelledDataError(problems)
    return out


def export_annotation_file(
    sentences: Path | str,
    output: Path | str,
    model: SentenceModel | Path | str | None = None,
    *,
    include_labels: bool = False,
    limit: int | None = None,
) -> int:
    """`pipeline annotate export SENTENCES OUTPUT [--model FOLDER]`: returns the number of rows written."""
    if isinstance(model, str | Path):
        from pipeline.models.base import load_model

        model = load_model(model)
    rows = annotation_rows(read_sentences(sentences), model, include_labels=include_labels, limit=limit)
    write_annotation_csv(rows, output)
    return len(rows)


# --- import ------------------------------------------------------------------------------------------


def parse_strategy_cell(cell: str) -> list[str]:
    """ "forebygga; forhindra" -> ["forebygga", "forhindra"]; separators ; , | or spaces; empty -> []."""
    return [part for part in _SEPARATORS.split(cell.strip().lower()) if part]


def _sentence_index(record_id: str, doc_id: str) -> int | None:
    prefix = f"{doc_id}#"
    if record_id.startswith(prefix) and record_id[len(prefix) :].isdigit():
        return int(record_id[len(prefix) :])
    return None


@dataclass
class AnnotationFile:
    """The annotated rows of a CSV (unannotated rows skipped) and every problem found."""

    sentences: list[LabelledSentence]
    problems: list[DataProblem]
    unannotated: int


def read_annotation_csv(path: Path | str) -> AnnotationFile:
    """Read an annotation CSV; each bad row is reported with its line number in the file."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        return AnnotationFile([], [DataProblem(source, 0, "file not found")], 0)
    sentences: list[LabelledSentence] = []
    problems: list[DataProblem] = []
    unannotated = 0
    first_line: dict[str, int] = {}
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in _REQUIRED_ON_IMPORT if c not in (reader.fieldnames or [])]
        if missing:
            return AnnotationFile([], [DataProblem(source, 1, f"missing column(s) {missing}")], 0)
        start = reader.line_num + 1
        for row in reader:
            line, start = start, reader.line_num + 1
            commitment = (row.get("commitment") or "").strip().lower()
            if not commitment:
                unannotated += 1
                continue
            record_id = (row.get("id") or "").strip()
            doc_id = (row.get("doc_id") or "").strip()
            try:
                sentence = LabelledSentence(
                    id=record_id,
                    doc_id=doc_id,
                    text=row.get("text") or "",
                    strategy=parse_strategy_cell(row.get("strategy") or ""),
                    commitment=commitment,
                    sentence_index=_sentence_index(record_id, doc_id),
                )
            except ValidationError as exc:
                for item in exc.errors():
                    message = str(item["msg"]).removeprefix("Value error, ")
                    problems.append(DataProblem(source, line, f"column {item['loc'][0]!r}: {message}"))
                continue
            empty = [name for name in ("id", "doc_id", "text") if not getattr(sentence, name).strip()]
            if empty:
                problems.append(DataProblem(source, line, f"empty column(s) {empty}"))
                continue
            if record_id in first_line:
                message = f"duplicate id {record_id!r} (first on line {first_line[record_id]})"
                problems.append(DataProblem(source, line, message))
                continue
            first_line[record_id] = line
            sentences.append(sentence)
    return AnnotationFile(sentences, problems, unannotated)


@dataclass
class ImportResult:
    """What `import_annotations` did to the labelled file."""

    path: Path
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    unannotated: int = 0
    total: int = 0

    def __str__(self) -> str:
        return (
            f"{self.path}: {self.added} added, {self.updated} updated, {self.unchanged} unchanged, "
            f"{self.unannotated} rows not yet annotated; {self.total} labelled sentences in all"
        )


def merge_annotations(
    existing: Sequence[LabelledSentence], new: Sequence[LabelledSentence], *, overwrite: bool = False
) -> tuple[list[LabelledSentence], dict[str, int]]:
    """Merge new labels into existing sentences by id.

    A new id is added; a known id with the same labels is unchanged; a known id with different labels is an
    error unless `overwrite` (then the new labels win). A known id with a different text is always an error:
    the annotator saw another sentence.
    """
    by_id = {s.id: s for s in existing}
    counts = {"added": 0, "updated": 0, "unchanged": 0}
    problems: list[DataProblem] = []
    merged = list(existing)
    position = {s.id: i for i, s in enumerate(merged)}
    for sentence in new:
        old = by_id.get(sentence.id)
        if old is None:
            merged.append(sentence)
            counts["added"] += 1
            continue
        if old.text.strip() != sentence.text.strip():
            problems.append(DataProblem("<annotations>", 0, f"id {sentence.id!r}: text differs from the labelled file"))
            continue
        if sorted(old.strategy) == sorted(sentence.strategy) and old.commitment == sentence.commitment:
            counts["unchanged"] += 1
            continue
        if not overwrite:
            problems.append(
                DataProblem(
                    "<annotations>",
                    0,
                    f"id {sentence.id!r}: labels {sentence.strategy}/{sentence.commitment} differ from the "
                    f"labelled file's {old.strategy}/{old.commitment} (use overwrite to replace)",
                )
            )
            continue
        merged[position[sentence.id]] = old.model_copy(
            update={"strategy": list(sentence.strategy), "commitment": sentence.commitment}
        )
        counts["updated"] += 1
    if problems:
        raise LabelledDataError(problems)
    return merged, counts


def import_annotations(
    annotations: Path | str,
    labelled: Path | str,
    *,
    overwrite: bool = False,
    other_splits: Sequence[Path | str] = (),
) -> ImportResult:
    """`pipeline annotate import`: validate an annotated CSV and merge it into a labelled JSONL file.

    The labelled file is created if missing and replaced atomically. Refused (nothing written) on any bad row,
    a label conflict (see `merge_annotations`), or a document that already belongs to one of `other_splits`
    (e.g. importing into train a document that dev holds).
    """
    labelled = Path(labelled)
    read = read_annotation_csv(annotations)
    if read.problems:
        raise LabelledDataError(read.problems)
    existing = read_labelled(labelled) if labelled.is_file() and labelled.stat().st_size > 0 else []
    merged, counts = merge_annotations(existing, read.sentences, overwrite=overwrite)

    taken: dict[str, str] = {}
    for other in other_splits:
        sentences, problems = check_labelled_file(other)
        if problems:
            raise LabelledDataError(problems)
        taken.update({s.doc_id: str(other) for s in sentences})
    clashes = sorted({s.doc_id for s in read.sentences if s.doc_id in taken})
    if clashes:
        raise LabelledDataError(
            [DataProblem(str(annotations), 0, f"document {d!r} already belongs to {taken[d]}") for d in clashes]
        )

    with atomic_path(labelled) as temporary:
        write_labelled(merged, temporary)
    return ImportResult(path=labelled, unannotated=read.unannotated, total=len(merged), **counts)


# --- agreement ---------------------------------------------------------------------------------------


def read_labels(path: Path | str) -> list[LabelledSentence]:
    """Labelled sentences from a JSONL file or an annotation CSV (unannotated rows skipped)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        read = read_annotation_csv(path)
        if read.problems:
            raise LabelledDataError(read.problems)
        return read.sentences
    return read_labelled(path)


@dataclass
class AgreementReport:
    """Agreement of annotator B with annotator A on the sentences both labelled (matched by id).

    Kappa is nan where it is undefined (both annotators used a single class throughout).
    """

    sentences: int
    only_in_a: int
    only_in_b: int
    commitment_kappa: float
    commitment_macro_f1: float
    commitment_accuracy: float
    strategy_kappa: dict[str, float] = field(default_factory=dict)
    strategy_f1: dict[str, float] = field(default_factory=dict)
    strategy_macro_f1: float = 0.0
    strategy_exact_match: float = 0.0


def agreement(a: Sequence[LabelledSentence], b: Sequence[LabelledSentence]) -> AgreementReport:
    """Cohen's kappa (commitment; each strategy label as yes/no) and F1 of B against A as reference."""
    from sklearn.metrics import cohen_kappa_score, f1_score

    from pipeline.schema import strategy_matrix

    b_by_id = {s.id: s for s in b}
    common = [s for s in a if s.id in b_by_id]
    if not common:
        raise ValueError("agreement: the two label sets share no sentence id")
    other = [b_by_id[s.id] for s in common]
    a_c = [s.commitment for s in common]
    b_c = [s.commitment for s in other]
    a_s = strategy_matrix([s.strategy for s in common])
    b_s = strategy_matrix([s.strategy for s in other])

    def kappa(x: Sequence[object], y: Sequence[object]) -> float:
        if len(set(x) | set(y)) < 2:
            return float("nan")
        return float(cohen_kappa_score(x, y))

    strategy_f1 = {
        label: float(f1_score(a_s[:, j], b_s[:, j], zero_division=0)) for j, label in enumerate(STRATEGY_LABELS)
    }
    return AgreementReport(
        sentences=len(common),
        only_in_a=len(a) - len(common),
        only_in_b=len({s.id for s in b} - {s.id for s in a}),
        commitment_kappa=kappa(a_c, b_c),
        commitment_macro_f1=float(f1_score(a_c, b_c, labels=list(COMMITMENT_LABELS), average="macro", zero_division=0)),
        commitment_accuracy=float(np.mean([x == y for x, y in zip(a_c, b_c, strict=True)])),
        strategy_kappa={
            label: kappa(a_s[:, j].tolist(), b_s[:, j].tolist()) for j, label in enumerate(STRATEGY_LABELS)
        },
        strategy_f1=strategy_f1,
        strategy_macro_f1=float(np.mean(list(strategy_f1.values()))),
        strategy_exact_match=float(np.mean(np.all(a_s == b_s, axis=1))),
    )


def agreement_between_files(a: Path | str, b: Path | str) -> AgreementReport:
    """`pipeline annotate agreement A B`: each file a labelled JSONL or an annotation CSV."""
    return agreement(read_labels(a), read_labels(b))


def agreement_table(report: AgreementReport) -> Table:
    from rich.table import Table

    table = Table(
        title="Annotator agreement",
        caption=(f"{report.sentences} sentences in common; {report.only_in_a} only in A, {report.only_in_b} only in B"),
    )
    for column in ("head", "label", "Cohen's kappa", "F1 (B vs A)"):
        table.add_column(column, justify="left" if column in ("head", "label") else "right")
    table.add_row("commitment", "(all)", f"{report.commitment_kappa:.3f}", f"{report.commitment_macro_f1:.3f} macro")
    for label in STRATEGY_LABELS:
        table.add_row("strategy", label, f"{report.strategy_kappa[label]:.3f}", f"{report.strategy_f1[label]:.3f}")
    table.add_row("strategy", "(all)", "", f"{report.strategy_macro_f1:.3f} macro")
    return table
