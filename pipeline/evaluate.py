"""The evaluate stage's work: score saved models on the same labelled data, and compare them pairwise.

Every model (majority, keyword, TF-IDF, BERT, ensemble) is scored by the same code (`scores.py`,
`metrics.py`), so their numbers can be compared; `reports.py` writes and renders the results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from pipeline.config_sections import EvaluateConfig
from pipeline.labelled_data import in_document_order, sentence_texts
from pipeline.metrics import HEADLINE_METRICS, PairedDifference, paired_differences, with_threshold_rule
from pipeline.schema import HeadProbabilities, LabelledSentence
from pipeline.scores import EvaluationReport, evaluate_predictions

if TYPE_CHECKING:
    from pipeline.models.base import SentenceModel


class PairedComparison(BaseModel):
    """Every scored model against one reference model (written as paired.md and paired.json)."""

    reference: str
    threshold_rule: str
    samples: int
    seed: int
    n_sentences: int
    n_documents: int
    differences: dict[str, dict[str, PairedDifference]]  # model -> metric -> difference

    def flat_metrics(self) -> dict[str, float]:
        """`paired.{model}.{metric}.{diff,ci_low,ci_high,share_better}`, for MLflow."""
        return {
            f"paired.{name}.{metric}.{field}": value
            for name, by_metric in self.differences.items()
            for metric, d in by_metric.items()
            for field, value in (
                ("diff", d.difference),
                ("ci_low", d.ci_low),
                ("ci_high", d.ci_high),
                ("share_better", d.share_better),
            )
        }


def evaluate_model(
    model: SentenceModel,
    data: Sequence[LabelledSentence],
    cfg: EvaluateConfig | None = None,
    name: str = "model",
) -> EvaluationReport:
    """Score a model in memory: it reads the sentences in document order, with their neighbours."""
    ordered = in_document_order(data)
    return evaluate_predictions(ordered, model.predict_proba(sentence_texts(ordered)), cfg, model_name=name)


@dataclass
class ScoredModels:
    """Several models scored on the same data: what the reports and the paired comparison are made from."""

    gold: list[LabelledSentence]  # in document order; row i of every probabilities is sentence i
    probabilities: dict[str, HeadProbabilities]  # strategy thresholds as the threshold rule chose them
    reports: dict[str, EvaluationReport]


def score_models(
    model_dirs: Sequence[Path], data: Sequence[LabelledSentence], cfg: EvaluateConfig | None = None
) -> ScoredModels:
    """The evaluate stage: load each saved model folder and score it on the same data.

    Keys are folder names (with the parent folder prefixed when two names collide).
    """
    from pipeline.models.base import load_model

    cfg = cfg or EvaluateConfig()
    gold = in_document_order(data)
    texts = sentence_texts(gold)
    names = [Path(d).name for d in model_dirs]
    scored = ScoredModels(gold=gold, probabilities={}, reports={})
    for folder, name in zip(model_dirs, names, strict=True):
        key = name if names.count(name) == 1 else f"{Path(folder).parent.name}/{name}"
        probs = with_threshold_rule(gold, load_model(folder).predict_proba(texts), cfg.threshold_rule)
        scored.probabilities[key] = probs
        scored.reports[key] = evaluate_predictions(gold, probs, cfg, model_name=key)
    return scored


def evaluate_models(
    model_dirs: Sequence[Path], data: Sequence[LabelledSentence], cfg: EvaluateConfig | None = None
) -> dict[str, EvaluationReport]:
    """`score_models`, reports only."""
    return score_models(model_dirs, data, cfg).reports


def paired_comparison(
    scored: ScoredModels,
    reference: str,
    cfg: EvaluateConfig | None = None,
    metrics: Sequence[str] = HEADLINE_METRICS,
) -> PairedComparison:
    """Every other scored model against `reference` (`paired_differences`, cfg's samples and seed)."""
    cfg = cfg or EvaluateConfig()
    if reference not in scored.probabilities:
        raise ValueError(
            f"evaluate.reference {reference!r} is not among the scored models {sorted(scored.probabilities)}"
        )
    samples = cfg.bootstrap_samples
    differences = {
        name: paired_differences(
            scored.gold, probs, scored.probabilities[reference], metrics=metrics, samples=samples, seed=cfg.seed
        )
        for name, probs in scored.probabilities.items()
        if name != reference
    }
    return PairedComparison(
        reference=reference,
        threshold_rule=cfg.threshold_rule,
        samples=samples,
        seed=cfg.seed,
        n_sentences=len(scored.gold),
        n_documents=len({s.doc_id for s in scored.gold}),
        differences=differences,
    )
