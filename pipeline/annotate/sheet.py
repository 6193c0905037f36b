"""The annotation sheet: the CSV annotators fill in, its columns and how the strategy cell is written, read
back row by row with every bad row reported by its line number."""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from pipeline.labelled_data import DataProblem
from pipeline.schema import LabelledSentence

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
REQUIRED_ON_IMPORT = ("id", "doc_id", "text", "strategy", "commitment")
_SEPARATORS = re.compile(r"[;,|\s]+")
STRATEGY_SEPARATOR = ";"


def write_annotation_csv(rows: Sequence[dict[str, str]], path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=EXPORT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


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
        missing = [c for c in REQUIRED_ON_IMPORT if c not in (reader.fieldnames or [])]
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
