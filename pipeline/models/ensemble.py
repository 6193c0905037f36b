"""Several sentence models combined into one `SentenceModel`: a stacker, or a fixed weighted average.

TF-IDF + LR and the fine-tuned BERT err on different sentences, so a combination beats either; how much to
trust each is learned on training documents held out from the members (docs/results.md, "## Quality").
Making the combination a model kind lets `pipeline run`, the registry, batch labelling and retraining use it
like any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from pipeline.labelled_data import grouped_split, in_document_order, sentence_texts, strategy_labelled
from pipeline.models.base import (
    EpochCallback,
    InferenceReport,
    SentenceModel,
    build_model,
    load_model,
    read_model_json,
    write_model_json,
)
from pipeline.models.stacking import (
    Stacker,
    fit_stacker,
    fit_temperature,
    learn_strategy_weights,
    learn_weights,
    log_odds,
)
from pipeline.schema import (
    COMMITMENT_LABELS,
    STRATEGY_LABELS,
    HeadProbabilities,
    LabelledSentence,
    SentenceText,
    commitment_indices,
    strategy_matrix,
)
from pipeline.training_config import EnsembleSpec


def mix_probabilities(
    member_probabilities: Sequence[HeadProbabilities],
    weights: np.ndarray,
    strategy_thresholds: np.ndarray,
    strategy_weights: np.ndarray | None = None,
) -> HeadProbabilities:
    """The weighted sum of members' probabilities (weights already normalised), with the given thresholds;
    strategy mixed with `strategy_weights` when given.

    A sentence is truncated when any member read it only in part.
    """
    strategy_weights = weights if strategy_weights is None else strategy_weights
    if not len(member_probabilities) == len(weights) == len(strategy_weights):
        raise ValueError(f"mix_probabilities: {len(weights)} weight(s) for {len(member_probabilities)} output(s)")
    n = len(member_probabilities[0].commitment) if member_probabilities else 0
    strategy = np.zeros((n, len(STRATEGY_LABELS)))
    commitment = np.zeros((n, len(COMMITMENT_LABELS)))
    truncated = np.zeros(n, dtype=bool)
    for weight, strategy_weight, probabilities in zip(weights, strategy_weights, member_probabilities, strict=True):
        strategy += strategy_weight * probabilities.strategy
        commitment += weight * probabilities.commitment
        truncated |= probabilities.truncated
    return HeadProbabilities(strategy, commitment, strategy_thresholds.copy(), truncated)


class EnsembleModel:
    """Members fitted on the same data, combined by a stacker, learned weights or fixed weights (`EnsembleSpec`).

    Every combiner learns only from training documents: `fit` holds out `selection_fraction` of them (or
    takes the `dev` it is given as that slice), fits the members on the rest, and learns the combination on
    the slice. The stages never pass the reported dev set here.
    """

    kind = "ensemble"

    def __init__(
        self,
        members: Sequence[SentenceModel],
        weights: Sequence[float] | None = None,
        tune_thresholds: bool = True,
        combiner: str | None = None,
        selection_fraction: float = 0.2,
        stacker_C: float = 1.0,
        seed: int = 13,
        stacker_balanced: bool = True,
        refit: Sequence[str] = (),
        calibrate: bool = False,
        per_head_weights: bool = False,
        strategy_weights: Sequence[float] | None = None,
    ) -> None:
        combiner = combiner or ("weights" if weights is not None else "stacker")
        if combiner == "weights":
            if weights is None or len(members) != len(weights) or not members:
                raise ValueError(f"EnsembleModel: {len(weights or [])} weight(s) for {len(members)} member(s)")
            weights_array = np.asarray(weights, dtype=float)
            if not np.all(np.isfinite(weights_array) & (weights_array > 0)):
                raise ValueError(f"EnsembleModel: every weight must be > 0 (got {list(weights)})")
            self.weights: np.ndarray | None = weights_array / weights_array.sum()
        elif combiner in ("stacker", "learned_weights"):
            # learned in `fit` (learned weights come back here from a saved model)
            self.weights = None if weights is None else np.asarray(weights, dtype=float)
        else:
            raise ValueError(
                f"EnsembleModel: unknown combiner {combiner!r}; expected 'stacker', 'learned_weights' or 'weights'"
            )
        self.members = list(members)
        self.combiner = combiner
        self.tune_thresholds = tune_thresholds
        self.selection_fraction = selection_fraction
        self.stacker_C = stacker_C
        self.stacker_balanced = stacker_balanced
        self.refit = tuple(refit)
        self.calibrate = calibrate
        self.per_head_weights = per_head_weights
        # learned_weights with per_head_weights: strategy's own mixing weights (None: the commitment weights)
        self.strategy_weights: np.ndarray | None = (
            None if strategy_weights is None else np.asarray(strategy_weights, dtype=float)
        )
        self.seed = seed
        # weighted mixes: per-head temperatures on the mixed probabilities' log-odds (1: none)
        self.commitment_temperature_ = 1.0
        self.strategy_temperature_ = 1.0
        self.stacker_: Stacker | None = None

    @classmethod
    def from_spec(cls, spec: EnsembleSpec) -> EnsembleModel:
        return cls(
            [build_model(m) for m in spec.members],
            spec.weights,
            spec.tune_thresholds,
            spec.combiner,
            spec.selection_fraction,
            spec.stacker_C,
            spec.seed,
            spec.stacker_balanced,
            spec.refit,
            spec.calibrate,
            spec.per_head_weights,
        )

    # the protocol

    def fit(
        self,
        train: Sequence[LabelledSentence],
        dev: Sequence[LabelledSentence] | None = None,
        *,
        callbacks: Sequence[EpochCallback] = (),
    ) -> Self:
        """Fit the members on the training documents outside the selection slice, then the combiner on it.

        Members whose kind is in `refit` are then fitted again on all of `train` (the combination was learned
        from their held-out outputs, as scikit-learn's stacking does). `dev`, when given, is used as the
        selection slice instead (members then fit on all of `train`).
        Members that train in epochs report to `callbacks` under `member<i>.`-prefixed metric names.
        """
        if not train:
            raise ValueError("EnsembleModel.fit: no training sentences")
        held_out = not dev
        if dev:
            fit_part, selection = list(train), in_document_order(dev)
        else:
            fit_part, selection = grouped_split(train, self.selection_fraction, self.seed)
            selection = in_document_order(selection)
        for i, member in enumerate(self.members):
            member.fit(fit_part, selection, callbacks=[_prefixed(callback, f"member{i}.") for callback in callbacks])
        members_on_slice = self.member_probabilities(sentence_texts(selection))
        self._learn_combination(selection, members_on_slice)
        if held_out:  # the combination is learned: cheap members now learn from every training document
            for member in self.members:
                if member.kind in self.refit:
                    member.fit(train)
        return self

    def _learn_combination(
        self, selection: Sequence[LabelledSentence], members_on_slice: list[HeadProbabilities]
    ) -> None:
        gold_commitment = commitment_indices([s.commitment for s in selection])
        gold_strategy = strategy_matrix([s.strategy for s in selection])
        rows = strategy_labelled(selection)  # strategy is learned and tuned where its labels count
        if self.combiner == "stacker":
            groups = [s.doc_id for s in selection]
            self.stacker_ = fit_stacker(
                members_on_slice,
                gold_commitment,
                gold_strategy,
                groups,
                C=self.stacker_C,
                seed=self.seed,
                balanced=self.stacker_balanced,
                strategy_rows=rows,
            )
            self.strategy_thresholds_ = self.stacker_.strategy_thresholds.copy()
            if not self.tune_thresholds:
                self.strategy_thresholds_ = np.full(len(STRATEGY_LABELS), 0.5)
                self.stacker_.strategy_thresholds = self.strategy_thresholds_.copy()
            return
        if self.combiner == "learned_weights":
            self.weights = learn_weights(members_on_slice, gold_commitment)
            if self.per_head_weights:
                on_rows = [p.rows(np.flatnonzero(rows)) for p in members_on_slice]
                self.strategy_weights = learn_strategy_weights(on_rows, gold_strategy[rows])
        self.strategy_thresholds_ = self._mean_member_thresholds()
        if self.calibrate:
            mixed = mix_probabilities(members_on_slice, self.weights, self.strategy_thresholds_, self.strategy_weights)
            self.commitment_temperature_ = fit_temperature(np.log(_clip(mixed.commitment)), gold_commitment, True)
            self.strategy_temperature_ = fit_temperature(log_odds(mixed.strategy[rows]), gold_strategy[rows], False)
            # a threshold on the mix means the same sentences after the (monotone) temperature
            self.strategy_thresholds_ = _scaled(self.strategy_thresholds_, self.strategy_temperature_)
        if self.tune_thresholds:
            from pipeline.metrics import tune_thresholds

            mixed = self._combine(members_on_slice)
            self.strategy_thresholds_ = tune_thresholds(mixed.strategy[rows], gold_strategy[rows])

    def _mean_member_thresholds(self) -> np.ndarray:
        assert self.weights is not None
        thresholds = [
            np.asarray(getattr(m, "strategy_thresholds_", np.full(len(STRATEGY_LABELS), 0.5)), dtype=float)
            for m in self.members
        ]
        weights = self.weights if self.strategy_weights is None else self.strategy_weights
        return np.sum([w * t for w, t in zip(weights, thresholds, strict=True)], axis=0)

    def _combine(self, member_probabilities: Sequence[HeadProbabilities]) -> HeadProbabilities:
        if self.stacker_ is not None:
            combined = self.stacker_.combine(member_probabilities)
            combined.strategy_thresholds = self.strategy_thresholds_.copy()
            return combined
        assert self.weights is not None
        thresholds = getattr(self, "strategy_thresholds_", np.full(len(STRATEGY_LABELS), 0.5))
        mixed = mix_probabilities(member_probabilities, self.weights, thresholds, self.strategy_weights)
        if self.commitment_temperature_ != 1.0:
            commitment = np.exp(np.log(_clip(mixed.commitment)) / self.commitment_temperature_)
            mixed.commitment = commitment / commitment.sum(axis=1, keepdims=True)
        if self.strategy_temperature_ != 1.0:
            mixed.strategy = _scaled(mixed.strategy, self.strategy_temperature_)
        return mixed

    def member_probabilities(self, sentences: Sequence[SentenceText]) -> list[HeadProbabilities]:
        """Each member's own output for `sentences`, in member order."""
        return [member.predict_proba(sentences) for member in self.members]

    def _check_fitted(self) -> None:
        if not hasattr(self, "strategy_thresholds_"):
            raise RuntimeError("EnsembleModel is not fitted: call fit() or load() first")

    def predict_proba(self, sentences: Sequence[SentenceText]) -> HeadProbabilities:
        """The members' probabilities mixed with the ensemble's weights (and its own thresholds)."""
        self._check_fitted()
        return self._combine(self.member_probabilities(sentences))

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

    def prepare_inference(self, folder: Path, dev: Sequence[LabelledSentence]) -> list[dict[str, Any]]:
        """Every member's faster paths, each in its own subfolder of the saved ensemble."""
        return [
            card
            for i, member in enumerate(self.members)
            for card in member.prepare_inference(Path(folder) / _member_folder(i, member), dev)
        ]

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
        folders = [_member_folder(i, member) for i, member in enumerate(self.members)]
        for member, folder in zip(self.members, folders, strict=True):
            member.save(path / folder)
        write_model_json(
            path,
            self.kind,
            members=folders,
            combiner=self.combiner,
            weights=None if self.weights is None else self.weights.tolist(),
            strategy_weights=None if self.strategy_weights is None else self.strategy_weights.tolist(),
            stacker=None if self.stacker_ is None else self.stacker_.to_json(),
            tune_thresholds=self.tune_thresholds,
            selection_fraction=self.selection_fraction,
            refit=list(self.refit),
            calibrate=self.calibrate,
            commitment_temperature=self.commitment_temperature_,
            strategy_temperature=self.strategy_temperature_,
            strategy_thresholds=self.strategy_thresholds_.tolist(),
        )

    @classmethod
    def load(cls, path: Path) -> Self:
        path = Path(path)
        card: dict[str, Any] = read_model_json(path, cls.kind)
        members = [load_model(path / folder) for folder in card["members"]]
        combiner = card.get("combiner", "weights")  # folders saved before the stacker mixed by weights
        model = cls(
            members,
            card.get("weights"),
            bool(card.get("tune_thresholds", True)),
            combiner,
            float(card.get("selection_fraction", 0.2)),
            strategy_weights=card.get("strategy_weights"),  # absent before per-head weights: one set for both
        )
        if card.get("stacker") is not None:
            model.stacker_ = Stacker.from_json(card["stacker"])
        # folders saved before calibration have no temperatures: 1 leaves their probabilities as they were
        model.commitment_temperature_ = float(card.get("commitment_temperature", 1.0))
        model.strategy_temperature_ = float(card.get("strategy_temperature", 1.0))
        model.strategy_thresholds_ = np.asarray(card["strategy_thresholds"], dtype=float)
        return model


def _member_folder(index: int, member: SentenceModel) -> str:
    return f"member{index}-{member.kind}"


def _clip(probabilities: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(probabilities, dtype=float), 1e-6, 1 - 1e-6)


def _scaled(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities with their log-odds divided by `temperature` (monotone: the order is kept)."""
    return 1.0 / (1.0 + np.exp(-log_odds(probabilities) / temperature))


def _prefixed(callback: EpochCallback, prefix: str) -> EpochCallback:
    return lambda epoch, metrics: callback(epoch, {f"{prefix}{k}": v for k, v in metrics.items()})
