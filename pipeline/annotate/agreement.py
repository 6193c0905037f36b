"""Agreement between two annotators (or an annotator and the gold file): Cohen's kappa and F1 per head."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.annotate.sheet import read_annotation_csv
from pipeline.labelled_data import LabelledDataError, read_labelled
from pipeline.schema import COMMITMENT_LABELS, STRATEGY_LABELS, LabelledSentence

if TYPE_CHECKING:
    from rich.table import Table


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
