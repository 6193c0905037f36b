"""The majority-class model: predicts the training distribution for every sentence, the floor any model must
clear (saved as a folder with `model.json` that `pipeline.models.base.load_model` restores)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Self

import numpy as np

from pipeline.labelled_data import strategy_labelled
from pipeline.models.base import SinglePassModel, check_fitted, read_model_json, write_model_json
from pipeline.schema import (
    COMMITMENT_LABELS,
    HeadProbabilities,
    LabelledSentence,
    SentenceText,
    commitment_indices,
    strategy_matrix,
)
from pipeline.training_config import MajoritySpec


class MajorityModel(SinglePassModel):
    """Predicts the training distribution for every sentence: the floor any model must clear."""

    kind = "majority"

    @classmethod
    def from_spec(cls, spec: MajoritySpec) -> MajorityModel:
        return cls()

    def _fit(self, train: Sequence[LabelledSentence], dev: Sequence[LabelledSentence] | None) -> Self:
        gold = commitment_indices([s.commitment for s in train])
        counts = np.bincount(gold, minlength=len(COMMITMENT_LABELS))
        self.commitment_prior_ = counts / counts.sum()
        labelled = [s for s, counts in zip(train, strategy_labelled(train), strict=True) if counts]
        self.strategy_prior_ = strategy_matrix([s.strategy for s in labelled or train]).mean(axis=0)
        return self

    def predict_proba(self, sentences: Sequence[SentenceText]) -> HeadProbabilities:
        check_fitted(self, "commitment_prior_")
        n = len(sentences)
        return HeadProbabilities(
            strategy=np.tile(self.strategy_prior_, (n, 1)),
            commitment=np.tile(self.commitment_prior_, (n, 1)),
        )

    def save(self, path: Path) -> None:
        check_fitted(self, "commitment_prior_")
        write_model_json(
            Path(path),
            self.kind,
            commitment_prior=self.commitment_prior_.tolist(),
            strategy_prior=self.strategy_prior_.tolist(),
        )

    @classmethod
    def load(cls, path: Path) -> Self:
        card = read_model_json(Path(path), cls.kind)
        model = cls()
        model.commitment_prior_ = np.asarray(card["commitment_prior"], dtype=float)
        model.strategy_prior_ = np.asarray(card["strategy_prior"], dtype=float)
        return model
