"""Import of an annotated sheet: validate it and merge its labels into a labelled JSONL file, refusing any
conflict, so nothing already labelled is lost or silently changed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.annotate.sheet import read_annotation_csv
from pipeline.io.atomic import atomic_path
from pipeline.labelled_data import DataProblem, LabelledDataError, check_labelled_file, read_labelled, write_labelled
from pipeline.schema import LabelledSentence


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
