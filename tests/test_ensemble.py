"""The ensemble model kind: a weighted mix of real, tiny members (TF-IDF + a micro BERT pretrained here).

Every sentence below is constructed for these tests from templates; none comes from a corpus.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fresh_process import predict_in_fresh_process
from micro_bert import constructed_labelled
from pydantic import ValidationError

from pipeline.config import (
    BertSpec,
    ConfigError,
    EnsembleSpec,
    LabelConfig,
    SegmentConfig,
    TfidfSpec,
    load_config,
)
from pipeline.labelled_data import in_document_order, sentence_texts
from pipeline.metrics import tune_thresholds
from pipeline.models import load_model
from pipeline.models.base import SentenceModel
from pipeline.models.ensemble import EnsembleModel
from pipeline.models.factory import build_model
from pipeline.schema import strategy_matrix

pytestmark = pytest.mark.slow  # real fine-tuning of a micro BERT member


TRAIN = constructed_labelled(24, seed=11, prefix="train", per_doc=5)
DEV = constructed_labelled(8, seed=12, prefix="dev", per_doc=5)


@pytest.fixture(scope="module")
def backbone(micro_backbone: Path) -> Path:
    """The session's micro BERT (tests/conftest.py), pretrained once for every BERT and ensemble test."""
    return micro_backbone


def ensemble_spec(backbone: Path, weights: list[float]) -> EnsembleSpec:
    bert = BertSpec(
        backbone=str(backbone),
        context=True,
        pooling="mean",
        max_length=64,
        epochs=3,
        learning_rate=2e-3,
        early_stopping_patience=10,
        threads=1,
        seed=7,
    )
    # the raw mix (no temperature), so the tests below can check it is the weighted mean
    return EnsembleSpec(members=[bert, TfidfSpec(min_df=1, threshold_folds=0)], weights=weights, calibrate=False)


@pytest.fixture(scope="module")
def fitted(backbone: Path) -> tuple[EnsembleModel, list[tuple[int, dict[str, float]]]]:
    epochs: list[tuple[int, dict[str, float]]] = []
    model = build_model(ensemble_spec(backbone, [1.0, 3.0]))
    assert isinstance(model, EnsembleModel)
    model.fit(TRAIN, DEV, callbacks=[lambda e, m: epochs.append((e, dict(m)))])
    return model, epochs


def dev_inputs():
    return sentence_texts(in_document_order(DEV))


# --- the mix ----------------------------------------------------------------------------------------------


def test_probabilities_are_the_weighted_mean_of_the_members(fitted: tuple[EnsembleModel, list]) -> None:
    model, _ = fitted
    assert isinstance(model, SentenceModel) and model.kind == "ensemble"
    assert [m.kind for m in model.members] == ["bert", "tfidf"]
    np.testing.assert_allclose(model.weights, [0.25, 0.75])
    inputs = dev_inputs()
    bert, tfidf = (member.predict_proba(inputs) for member in model.members)
    mixed = model.predict_proba(inputs)
    np.testing.assert_allclose(mixed.strategy, 0.25 * bert.strategy + 0.75 * tfidf.strategy, atol=1e-12)
    np.testing.assert_allclose(mixed.commitment, 0.25 * bert.commitment + 0.75 * tfidf.commitment, atol=1e-12)
    np.testing.assert_allclose(mixed.commitment.sum(axis=1), 1.0, atol=1e-9)
    # the members really differ, so the weights matter
    assert np.abs(bert.commitment - tfidf.commitment).max() > 0.05


def test_members_are_fitted_as_on_their_own(fitted: tuple[EnsembleModel, list], backbone: Path) -> None:
    model, _ = fitted
    alone = build_model(ensemble_spec(backbone, [1.0, 3.0]).members[1]).fit(TRAIN, DEV)
    inputs = dev_inputs()
    inside = model.members[1].predict_proba(inputs)
    np.testing.assert_allclose(inside.commitment, alone.predict_proba(inputs).commitment)


def test_strategy_thresholds_are_tuned_on_dev_for_the_mix(fitted: tuple[EnsembleModel, list]) -> None:
    model, _ = fitted
    ordered = in_document_order(DEV)
    mixed = model.predict_proba(sentence_texts(ordered))
    expected = tune_thresholds(mixed.strategy, strategy_matrix([s.strategy for s in ordered]))
    np.testing.assert_array_equal(model.strategy_thresholds_, expected)
    np.testing.assert_array_equal(mixed.strategy_thresholds, expected)


def test_without_dev_thresholds_are_the_weighted_member_thresholds() -> None:
    members = [build_model(TfidfSpec(min_df=1, threshold_folds=3)), build_model(TfidfSpec(min_df=1, C=1.0))]
    model = EnsembleModel(members, [2.0, 2.0]).fit(TRAIN)
    own = [m.strategy_thresholds_ for m in members]
    np.testing.assert_allclose(model.strategy_thresholds_, 0.5 * own[0] + 0.5 * own[1])


def test_epochs_of_the_bert_member_are_reported(fitted: tuple[EnsembleModel, list]) -> None:
    _, epochs = fitted
    assert [e for e, _ in epochs] == [1, 2, 3]
    assert all("member0.dev_mean_macro_f1" in metrics for _, metrics in epochs)  # the BERT member's


def test_the_mix_learns_the_constructed_cues(fitted: tuple[EnsembleModel, list]) -> None:
    model, _ = fitted
    ordered = in_document_order(DEV)
    predicted = model.predict_proba(sentence_texts(ordered)).commitment_labels()
    accuracy = np.mean([p == s.commitment for p, s in zip(predicted, ordered, strict=True)])
    assert accuracy > 0.8


def test_unfitted_model_says_so(backbone: Path) -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        build_model(ensemble_spec(backbone, [1, 1])).predict_proba(dev_inputs())


# --- saving and loading -------------------------------------------------------------------------------


def test_save_and_load_in_a_fresh_process_give_identical_probabilities(
    fitted: tuple[EnsembleModel, list], tmp_path: Path
) -> None:
    model, _ = fitted
    folder = tmp_path / "ensemble"
    model.save(folder)
    card = json.loads((folder / "model.json").read_text())
    assert card["kind"] == "ensemble" and card["weights"] == [0.25, 0.75]
    assert card["members"] == ["member0-bert", "member1-tfidf"]
    assert all((folder / name / "model.json").is_file() for name in card["members"])

    inputs = dev_inputs()
    loaded = predict_in_fresh_process(folder, inputs, tmp_path)
    original = model.predict_proba(inputs)
    np.testing.assert_allclose(loaded["strategy"], original.strategy, atol=1e-6)
    np.testing.assert_allclose(loaded["commitment"], original.commitment, atol=1e-6)
    np.testing.assert_array_equal(loaded["thresholds"], original.strategy_thresholds)

    again = load_model(folder)
    assert isinstance(again, EnsembleModel)
    np.testing.assert_allclose(again.weights, model.weights)


def test_the_registered_model_needs_every_members_packages(fitted: tuple[EnsembleModel, list], tmp_path: Path) -> None:
    from pipeline.pyfunc import model_kinds, requirements

    model, _ = fitted
    model.save(tmp_path / "ensemble")
    kinds = model_kinds(tmp_path / "ensemble")
    assert kinds == ["ensemble", "bert", "tfidf"]
    names = {r.split("==")[0] for r in requirements(*kinds)}
    assert {"torch", "transformers", "scikit-learn", "skops", "mlflow"} <= names
    assert len(names) == len(requirements(*kinds))  # no package twice


# One sentence, Swedish enough for the input screening, far over the BERT member's token limit.
LONG_SENTENCE = "Regeringen avsätter medel till " + ", ".join(["skolor och kommuner som ska arbeta för att"] * 20) + "."


def test_batch_labelling_runs_each_member_on_its_own_path(fitted: tuple[EnsembleModel, list], tmp_path: Path) -> None:
    """Labelling an ensemble gives its own probabilities; its BERT member reads a long sentence whole."""
    import pandas as pd

    from pipeline.label import label_documents
    from pipeline.labelling import ModelInfo, sentence_predictor
    from pipeline.schema import Document, SentenceText

    model, _ = fitted
    inputs = dev_inputs()
    model.configure_inference(threads=1)
    probabilities = model.predict_proba(inputs)
    members = [member.predict_proba(inputs) for member in model.members]
    np.testing.assert_allclose(probabilities.strategy, 0.25 * members[0].strategy + 0.75 * members[1].strategy)
    np.testing.assert_array_equal(probabilities.strategy_thresholds, model.strategy_thresholds_)
    assert not probabilities.truncated.any()

    bert = model.members[0]
    assert len(bert.tokenizer(LONG_SENTENCE, add_special_tokens=False)["input_ids"]) > bert.max_length_
    flags = model.predict_proba([SentenceText(LONG_SENTENCE), *inputs[:2]]).truncated
    assert flags.tolist() == [False, False, False]  # read in windows (pipeline.models.windows), not cut

    documents = [
        Document(id="kort", text=" ".join(s.text for s in inputs[:3])),
        # among ordinary sentences: a bare list of nouns has too few Swedish function words (not Swedish)
        Document(id="lång", text=" ".join(s.text for s in inputs[3:6]) + " " + LONG_SENTENCE),
    ]
    cfg = LabelConfig(output=tmp_path / "out" / "ensemble.parquet", threads=1)
    info = ModelInfo(name="ensemble", version="1", uri="test")
    result = label_documents(cfg, model, info, documents, SegmentConfig(), show_progress=False)
    rows = pd.read_parquet(result.output)
    assert not rows.truncated.any() and set(rows.doc_id) == {"kort", "lång"}
    assert result.rejects.read_text() == "" and result.warnings == 0 and result.rejected == 0

    # Quantization is for the BERT member; an ensemble without one refuses it.
    int8_cfg = cfg.model_copy(  # micro model: any disagreement; its own output (other arguments)
        update={"quantize": "dynamic-int8", "quantize_max_disagreement": 1.0, "output": tmp_path / "int8.parquet"}
    )
    int8 = label_documents(int8_cfg, model, info, documents, SegmentConfig(), show_progress=False)
    assert int8.precision == "int8" and int8.quantization_disagreement is not None
    model.configure_inference()
    without_bert = EnsembleModel(model.members[1:], [1.0])
    with pytest.raises(ValueError, match=r"label\.quantize=dynamic-int8: ensemble model: precision 'int8'"):
        sentence_predictor(without_bert, LabelConfig(quantize="dynamic-int8"))


# --- configuration ------------------------------------------------------------------------------------


def _config(tmp_path: Path, model_yaml: str) -> Path:
    path = tmp_path / "ensemble.yaml"
    path.write_text("train:\n  model:\n" + model_yaml, encoding="utf-8")
    return path


def test_weights_are_normalised() -> None:
    spec = EnsembleSpec(members=[TfidfSpec(), BertSpec()], weights=[3, 7])
    assert spec.weights == [0.3, 0.7]


def test_one_weight_per_member(tmp_path: Path) -> None:
    path = _config(tmp_path, "    kind: ensemble\n    members: [{kind: tfidf}, {kind: keyword}]\n    weights: [1.0]\n")
    with pytest.raises(ConfigError, match=r"train\.model\.weights: .*1 weight\(s\) for 2 members"):
        load_config(path)


@pytest.mark.parametrize("weights", [[0.5, 0.0], [1.0, -0.2], [1.0, float("nan")]])
def test_weights_must_be_positive(weights: list[float]) -> None:
    with pytest.raises(ValidationError, match="must be > 0"):
        EnsembleSpec(members=[TfidfSpec(), BertSpec()], weights=weights)


def test_members_are_validated_with_their_own_spec(tmp_path: Path) -> None:
    path = _config(
        tmp_path, "    kind: ensemble\n    members: [{kind: tfidf, Cee: 2}, {kind: keyword}]\n    weights: [1, 1]\n"
    )
    with pytest.raises(ConfigError, match=r"train\.model\.members\.0\.Cee: unknown key"):
        load_config(path)


def test_ensembles_do_not_nest(tmp_path: Path) -> None:
    inner = "{kind: ensemble, members: [{kind: tfidf}, {kind: keyword}], weights: [1, 1]}"
    path = _config(tmp_path, f"    kind: ensemble\n    members: [{inner}, {{kind: tfidf}}]\n    weights: [1, 1]\n")
    with pytest.raises(ConfigError, match=r"train\.model\.members\.0"):
        load_config(path)


def test_a_single_member_is_refused() -> None:
    with pytest.raises(ValidationError, match="at least 2"):
        EnsembleSpec(members=[TfidfSpec()], weights=[1.0])


def test_override_reaches_a_member_by_index(tmp_path: Path) -> None:
    path = _config(
        tmp_path, "    kind: ensemble\n    members: [{kind: bert, epochs: 8}, {kind: tfidf}]\n    weights: [0.3, 0.7]\n"
    )
    config = load_config(path, ["train.model.members.0.epochs=2", "train.model.weights=[1, 1]"])
    assert config.train.model.members[0].epochs == 2
    assert config.train.model.weights == [0.5, 0.5]
