"""The stacker and the selection protocol: combinations are learned on training documents, never on dev.

Sentences are constructed for the tests (tests/micro_bert.py templates); none comes from a corpus.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from micro_bert import constructed_labelled

from pipeline.config import EnsembleSpec, KeywordSpec, TfidfSpec
from pipeline.labelled_data import in_document_order, sentence_texts
from pipeline.metrics import calibration_bins, expected_calibration_error
from pipeline.models import load_model
from pipeline.models.ensemble import EnsembleModel
from pipeline.models.factory import build_model
from pipeline.models.stacking import (
    Stacker,
    _sigmoid,
    fit_stacker,
    fit_temperature,
    learn_strategy_weights,
    learn_weights,
    weight_grid,
)
from pipeline.schema import COMMITMENT_LABELS, STRATEGY_LABELS, HeadProbabilities
from pipeline.train import fit_and_save

TRAIN = constructed_labelled(30, seed=21, prefix="train", per_doc=5)
DEV = constructed_labelled(8, seed=22, prefix="dev", per_doc=5)


def _member(rng: np.random.Generator, commitment: np.ndarray, strategy: np.ndarray, signal: float) -> HeadProbabilities:
    """Probabilities that follow the gold labels with `signal` (0: pure noise)."""
    n = len(commitment)
    logits = rng.normal(size=(n, len(COMMITMENT_LABELS)))
    logits[np.arange(n), commitment] += signal
    c = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    s = _sigmoid(rng.normal(size=strategy.shape) + signal * (2 * strategy - 1))
    return HeadProbabilities(strategy=s, commitment=c)


def test_the_stacker_trusts_the_informative_member_and_round_trips() -> None:
    rng = np.random.default_rng(0)
    n = 600
    commitment = rng.integers(0, len(COMMITMENT_LABELS), n)
    strategy = (rng.random((n, len(STRATEGY_LABELS))) < 0.3).astype(int)
    members = [_member(rng, commitment, strategy, 3.0), _member(rng, commitment, strategy, 0.0)]
    groups = [f"d{i // 6}" for i in range(n)]
    stacker = fit_stacker(members, commitment, strategy, groups)
    per_member = np.abs(stacker.commitment_coef).reshape(5, 2, 8).sum(axis=(0, 2))
    assert per_member[0] > 2 * per_member[1]
    combined = stacker.combine(members)
    assert (combined.commitment.argmax(1) == commitment).mean() > 0.8
    again = Stacker.from_json(json.loads(json.dumps(stacker.to_json()))).combine(members)
    np.testing.assert_allclose(again.commitment, combined.commitment)
    np.testing.assert_allclose(again.strategy, combined.strategy)


def test_temperature_scaling_lowers_the_calibration_error_of_overconfident_logits() -> None:
    rng = np.random.default_rng(1)
    n = 4000
    true_logit = rng.normal(scale=1.5, size=n)
    outcome = (rng.random(n) < _sigmoid(true_logit)).astype(int)
    overconfident = 4 * true_logit
    temperature = fit_temperature(overconfident[:, None], outcome[:, None], multiclass=False)
    assert 3.0 < temperature < 5.0

    def ece(logits: np.ndarray) -> float:
        return expected_calibration_error(calibration_bins(_sigmoid(logits), outcome))

    assert ece(overconfident / temperature) < ece(overconfident) / 2


def test_nothing_is_learned_from_the_reported_dev_set(tmp_path: Path) -> None:
    """The train stage's fit gives the same model whatever dev holds, even dev with every label wrong."""
    spec = EnsembleSpec(members=[TfidfSpec(min_df=1, threshold_folds=3), KeywordSpec()], selection_fraction=0.3)
    wrong = [s.model_copy(update={"commitment": "funding", "strategy": ["forsvara"]}) for s in DEV]
    first = load_model(fit_and_save(spec, TRAIN, DEV, tmp_path / "a"))
    second = load_model(fit_and_save(spec, TRAIN, wrong, tmp_path / "b"))
    inputs = sentence_texts(in_document_order(DEV))
    a, b = first.predict_proba(inputs), second.predict_proba(inputs)
    np.testing.assert_array_equal(a.commitment, b.commitment)
    np.testing.assert_array_equal(a.strategy_thresholds, b.strategy_thresholds)
    assert isinstance(first, EnsembleModel) and first.stacker_ is not None


def test_the_stacked_ensemble_learns_the_cues_and_reloads(tmp_path: Path) -> None:
    spec = EnsembleSpec(members=[TfidfSpec(min_df=1, threshold_folds=3), KeywordSpec()])
    model = EnsembleModel.from_spec(spec).fit(TRAIN)
    model.save(tmp_path / "m")
    again = load_model(tmp_path / "m")
    ordered = in_document_order(DEV)
    inputs = sentence_texts(ordered)
    predicted = model.predict_proba(inputs)
    np.testing.assert_allclose(again.predict_proba(inputs).commitment, predicted.commitment)
    accuracy = np.mean([p == s.commitment for p, s in zip(predicted.commitment_labels(), ordered, strict=True)])
    assert accuracy > 0.9


def test_cheap_members_learn_from_every_training_document_once_the_stacker_is_learned() -> None:
    tfidf = TfidfSpec(min_df=1, tune_thresholds=False)
    model = EnsembleModel.from_spec(EnsembleSpec(members=[tfidf, KeywordSpec()], refit=["tfidf"])).fit(TRAIN)
    alone = build_model(tfidf).fit(TRAIN)
    inputs = sentence_texts(in_document_order(DEV))
    np.testing.assert_allclose(
        model.members[0].predict_proba(inputs).commitment, alone.predict_proba(inputs).commitment
    )
    held = EnsembleModel.from_spec(EnsembleSpec(members=[tfidf, KeywordSpec()], refit=[])).fit(TRAIN)
    assert (
        np.abs(held.members[0].predict_proba(inputs).commitment - alone.predict_proba(inputs).commitment).max() > 1e-6
    )


def test_learned_weights_favour_the_informative_member_and_reload(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n = 500
    commitment = rng.integers(0, len(COMMITMENT_LABELS), n)
    strategy = (rng.random((n, len(STRATEGY_LABELS))) < 0.3).astype(int)
    members = [_member(rng, commitment, strategy, 0.2), _member(rng, commitment, strategy, 3.0)]
    weights = learn_weights(members, commitment)
    assert weights.sum() == pytest.approx(1.0) and weights[1] > weights[0]
    assert len(weight_grid(3)) == 66  # 0.1 steps on the simplex of three members

    spec = EnsembleSpec(members=[TfidfSpec(min_df=1, tune_thresholds=False), KeywordSpec()], combiner="learned_weights")
    model = EnsembleModel.from_spec(spec).fit(TRAIN)
    assert model.weights is not None and model.weights.sum() == pytest.approx(1.0)
    model.save(tmp_path / "m")
    again = load_model(tmp_path / "m")
    inputs = sentence_texts(in_document_order(DEV))
    np.testing.assert_allclose(again.predict_proba(inputs).commitment, model.predict_proba(inputs).commitment)
    np.testing.assert_array_equal(again.weights, model.weights)


def test_a_calibrated_mix_keeps_its_labels_and_its_temperatures_reload(tmp_path: Path) -> None:
    members = [TfidfSpec(min_df=1, tune_thresholds=False), KeywordSpec()]
    inputs = sentence_texts(in_document_order(DEV))
    raw = EnsembleModel.from_spec(EnsembleSpec(members=members, weights=[0.7, 0.3], calibrate=False)).fit(TRAIN)
    calibrated = EnsembleModel.from_spec(EnsembleSpec(members=members, weights=[0.7, 0.3])).fit(TRAIN)
    assert calibrated.commitment_temperature_ != 1.0 and calibrated.strategy_temperature_ != 1.0
    before, after = raw.predict_proba(inputs), calibrated.predict_proba(inputs)
    np.testing.assert_allclose(after.commitment.sum(axis=1), 1.0)
    np.testing.assert_array_equal(after.commitment.argmax(1), before.commitment.argmax(1))  # same labels
    assert np.abs(after.commitment - before.commitment).max() > 1e-3  # other confidences
    calibrated.save(tmp_path / "m")
    card = json.loads((tmp_path / "m" / "model.json").read_text(encoding="utf-8"))
    assert card["commitment_temperature"] == calibrated.commitment_temperature_
    again = load_model(tmp_path / "m").predict_proba(inputs)
    np.testing.assert_allclose(again.commitment, after.commitment)
    np.testing.assert_allclose(again.strategy, after.strategy)
    np.testing.assert_array_equal(again.strategy_thresholds, after.strategy_thresholds)


def test_each_head_learns_its_own_weights() -> None:
    rng = np.random.default_rng(5)
    n = 600
    commitment = rng.integers(0, len(COMMITMENT_LABELS), n)
    strategy = (rng.random((n, len(STRATEGY_LABELS))) < 0.3).astype(int)
    good_c, good_s = _member(rng, commitment, strategy, 3.0), _member(rng, commitment, strategy, 3.0)
    noise = _member(rng, commitment, strategy, 0.0)
    # member 0 knows commitment only, member 1 strategy only
    members = [
        HeadProbabilities(strategy=noise.strategy, commitment=good_c.commitment),
        HeadProbabilities(strategy=good_s.strategy, commitment=noise.commitment),
    ]
    assert learn_weights(members, commitment)[0] > 0.5
    assert learn_strategy_weights(members, strategy)[1] > 0.5


def test_per_head_weights_are_saved_and_mix_strategy(tmp_path: Path) -> None:
    members = [TfidfSpec(min_df=1, tune_thresholds=False), KeywordSpec()]
    spec = EnsembleSpec(members=members, combiner="learned_weights", calibrate=False, per_head_weights=True)
    model = EnsembleModel.from_spec(spec).fit(TRAIN)
    assert model.strategy_weights is not None and model.strategy_weights.sum() == pytest.approx(1.0)
    inputs = sentence_texts(in_document_order(DEV))
    tfidf, keyword = (m.predict_proba(inputs) for m in model.members)
    mixed = model.predict_proba(inputs)
    w, ws = model.weights, model.strategy_weights
    np.testing.assert_allclose(mixed.commitment, w[0] * tfidf.commitment + w[1] * keyword.commitment)
    np.testing.assert_allclose(mixed.strategy, ws[0] * tfidf.strategy + ws[1] * keyword.strategy)
    model.save(tmp_path / "m")
    again = load_model(tmp_path / "m")
    np.testing.assert_array_equal(again.strategy_weights, ws)
    np.testing.assert_allclose(again.predict_proba(inputs).strategy, mixed.strategy)
    one_set = EnsembleModel.from_spec(spec.model_copy(update={"per_head_weights": False})).fit(TRAIN)
    assert one_set.strategy_weights is None
