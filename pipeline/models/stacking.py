"""A stacker: logistic regression on the members' probabilities, learned on sentences the members never saw.

Fixed mixing weights and thresholds chosen on the dev set that is then reported fit that set (the +0.07
strategy gain of the old ensemble did not carry over to unseen documents). The stacker instead learns how far
to trust each member from a held-out slice of the training documents; its strategy thresholds are tuned on
its own out-of-fold predictions over that slice, and a temperature per head is fitted there too, so that a
confidence of 0.8 is right about 80% of the time. Its parameters are plain numbers saved in JSON (no pickle).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.schema import COMMITMENT_LABELS, STRATEGY_LABELS, HeadProbabilities

_EPS = 1e-5


def log_odds(probabilities: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)), with p clipped away from 0 and 1."""
    clipped = np.clip(np.asarray(probabilities, dtype=float), _EPS, 1 - _EPS)
    return np.log(clipped / (1 - clipped))


def member_features(member_probabilities: Sequence[HeadProbabilities]) -> np.ndarray:
    """(n, members x 8): every member's commitment and strategy probabilities, as log-odds."""
    blocks = [
        log_odds(matrix)
        for probabilities in member_probabilities
        for matrix in (probabilities.commitment, probabilities.strategy)
    ]
    return np.hstack(blocks)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


def fit_temperature(logits: np.ndarray, gold: np.ndarray, multiclass: bool) -> float:
    """The temperature (0.05-20) that minimises the log-loss of `logits / T` against `gold`."""
    from scipy.optimize import minimize_scalar

    def loss(log_t: float) -> float:
        scaled = logits / np.exp(log_t)
        if multiclass:
            p = _softmax(scaled)[np.arange(len(gold)), gold]
            return float(-np.mean(np.log(np.clip(p, 1e-12, None))))
        p = np.clip(_sigmoid(scaled), 1e-12, 1 - 1e-12)
        return float(-np.mean(gold * np.log(p) + (1 - gold) * np.log(1 - p)))

    result = minimize_scalar(loss, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


@dataclass
class Stacker:
    """Per head: a linear layer on member log-odds (class-balanced, for macro-F1) and a temperature."""

    commitment_coef: np.ndarray  # (5, features)
    commitment_intercept: np.ndarray  # (5,)
    strategy_coef: np.ndarray  # (3, features)
    strategy_intercept: np.ndarray  # (3,)
    commitment_temperature: float = 1.0
    strategy_temperature: float = 1.0
    strategy_thresholds: np.ndarray = field(default_factory=lambda: np.full(len(STRATEGY_LABELS), 0.5))

    def logits(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(commitment logits, strategy logits) before temperature."""
        commitment = features @ self.commitment_coef.T + self.commitment_intercept
        strategy = features @ self.strategy_coef.T + self.strategy_intercept
        return commitment, strategy

    def combine(self, member_probabilities: Sequence[HeadProbabilities]) -> HeadProbabilities:
        """The stacked, temperature-scaled probabilities (a sentence is truncated if any member cut it)."""
        features = member_features(member_probabilities)
        commitment, strategy = self.logits(features)
        truncated = np.zeros(len(features), dtype=bool)
        for probabilities in member_probabilities:
            truncated |= probabilities.truncated
        return HeadProbabilities(
            strategy=_sigmoid(strategy / self.strategy_temperature),
            commitment=_softmax(commitment / self.commitment_temperature),
            strategy_thresholds=self.strategy_thresholds.copy(),
            truncated=truncated,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "commitment_coef": self.commitment_coef.tolist(),
            "commitment_intercept": self.commitment_intercept.tolist(),
            "strategy_coef": self.strategy_coef.tolist(),
            "strategy_intercept": self.strategy_intercept.tolist(),
            "commitment_temperature": self.commitment_temperature,
            "strategy_temperature": self.strategy_temperature,
            "strategy_thresholds": self.strategy_thresholds.tolist(),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Stacker:
        arrays = {k: np.asarray(raw[k], dtype=float) for k in ("commitment_coef", "commitment_intercept")}
        arrays |= {k: np.asarray(raw[k], dtype=float) for k in ("strategy_coef", "strategy_intercept")}
        return cls(
            **arrays,
            commitment_temperature=float(raw["commitment_temperature"]),
            strategy_temperature=float(raw["strategy_temperature"]),
            strategy_thresholds=np.asarray(raw["strategy_thresholds"], dtype=float),
        )


def _fit_linear(
    features: np.ndarray,
    commitment: np.ndarray,
    strategy: np.ndarray,
    C: float,
    balanced: bool,
    strategy_rows: np.ndarray | None = None,
) -> Stacker:
    """Commitment on every row; strategy on `strategy_rows` (bool mask; None: every row)."""
    from sklearn.linear_model import LogisticRegression

    if strategy_rows is not None:
        features_s, strategy = features[strategy_rows], strategy[strategy_rows]
    else:
        features_s = features

    class_weight = "balanced" if balanced else None
    n_features = features.shape[1]
    c_coef = np.zeros((len(COMMITMENT_LABELS), n_features))
    c_intercept = np.full(len(COMMITMENT_LABELS), -1e3)  # a type never seen on the slice is never predicted
    present = np.unique(commitment)
    if len(present) == 1:
        c_intercept[present[0]] = 0.0
    else:
        model = LogisticRegression(C=C, class_weight=class_weight, max_iter=2000).fit(features, commitment)
        rows = model.coef_ if len(present) > 2 else np.vstack([-model.coef_[0] / 2, model.coef_[0] / 2])
        intercepts = model.intercept_ if len(present) > 2 else np.array([-1, 1]) * model.intercept_[0] / 2
        c_coef[model.classes_] = rows
        c_intercept[model.classes_] = intercepts
    s_coef = np.zeros((len(STRATEGY_LABELS), n_features))
    s_intercept = np.zeros(len(STRATEGY_LABELS))
    for j in range(len(STRATEGY_LABELS)):
        column = strategy[:, j]
        if column.min() == column.max():
            s_intercept[j] = 10.0 if column[0] else -10.0
            continue
        model = LogisticRegression(C=C, class_weight=class_weight, max_iter=2000).fit(features_s, column)
        s_coef[j], s_intercept[j] = model.coef_[0], model.intercept_[0]
    return Stacker(c_coef, c_intercept, s_coef, s_intercept)


def fit_stacker(
    member_probabilities: Sequence[HeadProbabilities],
    commitment: np.ndarray,
    strategy: np.ndarray,
    groups: Sequence[str],
    C: float = 1.0,
    folds: int = 5,
    seed: int = 13,
    balanced: bool = True,
    strategy_rows: np.ndarray | None = None,
) -> Stacker:
    """Fit on the held-out slice; thresholds and temperatures come from document-grouped out-of-fold outputs.

    `strategy_rows` (bool mask) marks the sentences whose strategy labels count (None: all of them).
    """
    from sklearn.model_selection import GroupKFold

    from pipeline.metrics import tune_thresholds

    features = member_features(member_probabilities)
    n_folds = min(folds, len(set(groups)))
    c_logits = np.zeros((len(features), len(COMMITMENT_LABELS)))
    s_logits = np.zeros((len(features), len(STRATEGY_LABELS)))
    if n_folds >= 2:
        splitter = GroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        for fit_idx, held_idx in splitter.split(features, groups=list(groups)):
            fold_rows = None if strategy_rows is None else strategy_rows[fit_idx]
            fold = _fit_linear(features[fit_idx], commitment[fit_idx], strategy[fit_idx], C, balanced, fold_rows)
            c_logits[held_idx], s_logits[held_idx] = fold.logits(features[held_idx])
    stacker = _fit_linear(features, commitment, strategy, C, balanced, strategy_rows)
    if n_folds >= 2:
        rows = np.ones(len(strategy), dtype=bool) if strategy_rows is None else strategy_rows
        stacker.commitment_temperature = fit_temperature(c_logits, commitment, multiclass=True)
        stacker.strategy_temperature = fit_temperature(s_logits[rows], strategy[rows], multiclass=False)
        calibrated = _sigmoid(s_logits[rows] / stacker.strategy_temperature)
        stacker.strategy_thresholds = tune_thresholds(calibrated, strategy[rows])
    return stacker


def weight_grid(members: int, step: float = 0.1) -> np.ndarray:
    """Every weight vector on the simplex in `step`s ((k, members), rows sum to 1)."""
    units = round(1 / step)

    def compositions(total: int, parts: int) -> list[list[int]]:
        if parts == 1:
            return [[total]]
        return [[first, *rest] for first in range(total + 1) for rest in compositions(total - first, parts - 1)]

    return np.array(compositions(units, members), dtype=float) / units


def learn_strategy_weights(
    member_probabilities: Sequence[HeadProbabilities], strategy: np.ndarray, step: float = 0.1
) -> np.ndarray:
    """The strategy mixing weights (a grid of `step`) with the best strategy macro-F1 on held-out sentences,
    each grid point scored at the thresholds tuned for its own mix. Ties go to the weights closest to equal."""
    from sklearn.metrics import f1_score

    from pipeline.metrics import tune_thresholds

    grid = weight_grid(len(member_probabilities), step)
    stacked = np.stack([p.strategy for p in member_probabilities])  # (members, n, labels)
    scores = []
    for w in grid:
        mixed = np.tensordot(w, stacked, axes=1)
        predicted = (mixed >= tune_thresholds(mixed, strategy)[None, :]).astype(int)
        scores.append(f1_score(strategy, predicted, average="macro", zero_division=0))
    equal = np.full(len(member_probabilities), 1 / len(member_probabilities))
    best = max(scores)
    tied = [w for w, score in zip(grid, scores, strict=True) if score >= best - 1e-12]
    return min(tied, key=lambda w: float(np.abs(w - equal).sum()))


def learn_weights(
    member_probabilities: Sequence[HeadProbabilities], commitment: np.ndarray, step: float = 0.1
) -> np.ndarray:
    """The mixing weights (a grid of `step`) with the best commitment macro-F1 on held-out sentences.

    Commitment macro-F1 is the retrain gate's metric; strategy is then served by thresholds tuned for the mix.
    Ties go to the weights closest to an equal mix.
    """
    from sklearn.metrics import f1_score

    grid = weight_grid(len(member_probabilities), step)
    stacked = np.stack([p.commitment for p in member_probabilities])  # (members, n, classes)
    labels = list(range(len(COMMITMENT_LABELS)))
    mixed = [np.tensordot(w, stacked, axes=1).argmax(1) for w in grid]
    scores = [f1_score(commitment, m, labels=labels, average="macro", zero_division=0) for m in mixed]
    equal = np.full(len(member_probabilities), 1 / len(member_probabilities))
    best = max(scores)
    tied = [w for w, score in zip(grid, scores, strict=True) if score >= best - 1e-12]
    return min(tied, key=lambda w: float(np.abs(w - equal).sum()))
