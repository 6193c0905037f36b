"""A weighted probability average of several sentence models, as one `SentenceModel`.

On the gold data no single model wins both heads: TF-IDF + LR is stronger on commitment, the fine-tuned BERT
adds on strategy, and 0.3 x BERT + 0.7 x TF-IDF beats TF-IDF on both (docs/results.md, "## BERT"). Making
the mix a model kind lets `pipeline run`, the registry, batch labelling and retraining use it like any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from pipeline.config import EnsembleSpec
from pipeline.labelled_data import in_document_order, sentence_texts
from pipeline.models.base import (
    EpochCallback,
    InferenceReport,
    SentenceModel,
    build_model,
    load_model,
    read_model_json,
    write_model_json,
)
from pipeline.schema import (
    COMMITMENT_LABELS,
    STRATEGY_LABELS,
    HeadProbabilities,
    LabelledSentence,
    SentenceText,
    strategy_matrix,
)


def mix_probabilities(
    member_probabilities: Sequence[HeadProbabilities], weights: np.ndarray, strategy_thresholds: np.ndarray
) -> HeadProbabilities:
    """The weighted sum of members' probabilities (weights already normalised), with the given thresholds.

    A sentence is truncated when any member read it only in part.
    """
    if len(member_probabilities) != len(weights):
        raise ValueError(f"mix_probabilities: {len(weights)} weight(s) for {len(member_probabilities)} output(s)")
    n = len(member_probabilities[0].commitment) if member_probabilities else 0
    strategy = np.zeros((n, len(STRATEGY_LABELS)))
    commitment = np.zeros((n, len(COMMITMENT_LABELS)))
    truncated = np.zeros(n, dtype=bool)
    for weight, probabilities in zip(weights, member_probabilities, strict=True):
        strategy += weight * probabilities.strategy
        commitment += weight * probabilities.commitment
        truncated |= probabilities.truncated
    return HeadProbabilities(strategy, commitment, strategy_thresholds.copy(), truncated)


class EnsembleModel:
    """Members fitted on the same data; probabilities averaged with fixed weights (normalised to sum to 1).

    Strategy thresholds: tuned on dev for the averaged probabilities when `fit` gets dev (and
    `tune_thresholds`), else the weighted mean of the members' own thresholds.
    """

    kind = "ensemble"

    def __init__(
        self, members: Sequence[SentenceModel], weights: Sequence[float], tune_thresholds: bool = True
    ) -> None:
        if len(members) != len(weights) or not members:
            raise ValueError(f"EnsembleModel: {len(weights)} weight(s) for {len(members)} member(s)")
        weights_array = np.asarray(weights, dtype=float)
        if not np.all(np.isfinite(weights_array) & (weights_array > 0)):
            raise ValueError(f"EnsembleModel: every weight must be > 0 (got {list(weights)})")
        self.members = list(members)
        self.weights = weights_array / weights_array.sum()
        self.tune_thresholds = tune_thresholds

    @classmethod
    def from_spec(cls, spec: EnsembleSpec) -> EnsembleModel:
        return cls([build_model(m) for m in spec.members], spec.weights, spec.tune_thresholds)

    # the protocol

    def fit(
        self,
        train: Sequence[LabelledSentence],
        dev: Sequence[LabelledSentence] | None = None,
        *,
        callbacks: Sequence[EpochCallback] = (),
    ) -> Self:
        """Fit every member (each uses dev as its own spec says), then tune the mix's strategy thresholds.

        Members that train in epochs report to `callbacks` under `member<i>.`-prefixed metric names.
        """
        if not train:
            raise ValueError("EnsembleModel.fit: no training sentences")
        for i, member in enumerate(self.members):
            member.fit(train, dev, callbacks=[_prefixed(callback, f"member{i}.") for callback in callbacks])
        self.strategy_thresholds_ = self._mean_member_thresholds()
        if dev and self.tune_thresholds:
            from pipeline.metrics import tune_thresholds

            ordered = in_document_order(dev)
            probabilities = self.predict_proba(sentence_texts(ordered))
            gold = strategy_matrix([s.strategy for s in ordered])
            self.strategy_thresholds_ = tune_thresholds(probabilities.strategy, gold)
        return self

    def _mean_member_thresholds(self) -> np.ndarray:
        thresholds = [
            np.asarray(getattr(m, "strategy_thresholds_", np.full(len(STRATEGY_LABELS), 0.5)), dtype=float)
            for m in self.members
        ]
        return np.sum([w * t for w, t in zip(self.weights, thresholds, strict=True)], axis=0)

    def member_probabilities(self, sentences: Sequence[SentenceText]) -> list[HeadProbabilities]:
        """Each member's own output for `sentences`, in member order."""
        return [member.predict_proba(sentences) for member in self.members]

    def _check_fitted(self) -> None:
        if not hasattr(self, "strategy_thresholds_"):
            raise RuntimeError("EnsembleModel is not fitted: call fit() or load() first")

    def predict_proba(self, sentences: Sequence[SentenceText]) -> HeadProbabilities:
        """The members' probabilities mixed with the ensemble's weights (and its own thresholds)."""
        self._check_fitted()
        return mix_probabilities(self.member_probabilities(sentences), self.weights, self.strategy_thresholds_)

    @property
    def precisions(self) -> tuple[str, ...]:  # type: ignore[override]
        """Every precision some member can run in."""
        return tuple(dict.fromkeys(p for member in self.members for p in member.precisions))

    def configure_inference(self, precision: str = "float32", threads: int | None = None, **options: Any) -> None:
        """Forward to every member; a lower precision goes to the members that have it, float32 to the rest."""
        if precision not in self.precisions:
            raise ValueError(
                f"ensemble model: precision {precision!r} is not available to any member "
                f"(members run in {list(self.precisions)})"
            )
        for member in self.members:
            chosen = precision if precision in member.precisions else "float32"
            member.configure_inference(chosen, threads, **options)

    def inference_report(self) -> InferenceReport:
        """The lower precision a member runs in (if any), and the largest disagreement measured."""
        reports = [member.inference_report() for member in self.members]
        lower = [r.precision for r in reports if r.precision != "float32"]
        measured = [r.disagreement for r in reports if r.disagreement is not None]
        return InferenceReport(lower[0] if lower else "float32", max(measured) if measured else None)

    def save(self, path: Path) -> None:
        """model.json (weights, thresholds, member folders) and one subfolder per member."""
        if not hasattr(self, "strategy_thresholds_"):
            raise RuntimeError("EnsembleModel is not fitted: call fit() or load() first")
        path = Path(path)
        folders = [f"member{i}-{member.kind}" for i, member in enumerate(self.members)]
        for member, folder in zip(self.members, folders, strict=True):
            member.save(path / folder)
        write_model_json(
            path,
            self.kind,
            members=folders,
            weights=self.weights.tolist(),
            tune_thresholds=self.tune_thresholds,
            strategy_thresholds=self.strategy_thresholds_.tolist(),
        )

    @classmethod
    def load(cls, path: Path) -> Self:
        path = Path(path)
        card: dict[str, Any] = read_model_json(path, cls.kind)
        members = [load_model(path / folder) for folder in card["members"]]
        model = cls(members, card["weights"], bool(card.get("tune_thresholds", True)))
        model.strategy_thresholds_ = np.asarray(card["strategy_thresholds"], dtype=float)
        return model


def _prefixed(callback: EpochCallback, prefix: str) -> EpochCallback:
    return lambda epoch, metrics: callback(epoch, {f"{prefix}{k}": v for k, v in metrics.items()})
