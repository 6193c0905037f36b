"""Evaluation: metrics match scikit-learn and hand counts; intervals resample documents; plots exist."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from labelled_examples import constructed_sentences
from sklearn.metrics import f1_score, precision_recall_fscore_support

from pipeline.config import EvaluateConfig
from pipeline.evaluate import (
    bootstrap_metrics,
    calibration_bins,
    comparison_markdown,
    comparison_table,
    evaluate_model,
    evaluate_models,
    evaluate_predictions,
    expected_calibration_error,
    read_report,
    tune_thresholds,
    write_report,
)
from pipeline.models.baselines import KeywordModel, MajorityModel
from pipeline.schema import COMMITMENT_LABELS, HeadProbabilities, LabelledSentence

REPO = Path(__file__).resolve().parents[1]
NO_BOOTSTRAP = EvaluateConfig(bootstrap_samples=0)


def sentence(i: int, doc: str, strategy: list[str], commitment: str) -> LabelledSentence:
    return LabelledSentence(id=f"{doc}#{i}", doc_id=doc, text=f"Konstruerad mening {i}.", strategy=strategy,
                            commitment=commitment, sentence_index=i)  # fmt: skip


def one_hot(labels: list[str], confidence: float = 0.9) -> np.ndarray:
    out = np.full((len(labels), 5), (1 - confidence) / 4)
    for i, label in enumerate(labels):
        out[i, COMMITMENT_LABELS.index(label)] = confidence
    return out


# gold and predictions for six sentences in three documents; hand-checked counts in the comments
GOLD = [
    sentence(0, "a", ["forebygga"], "funding"),
    sentence(1, "a", [], "none"),
    sentence(0, "b", ["forhindra"], "pending_proposal"),
    sentence(1, "b", ["forhindra", "forsvara"], "none"),
    sentence(0, "c", [], "support"),
    sentence(1, "c", ["forsvara"], "institution"),
]
PREDICTED_COMMITMENT = ["funding", "none", "none", "none", "support", "support"]
#                 forebygga forhindra forsvara
STRATEGY_PROBS = np.array(
    [
        [0.9, 0.1, 0.1],  # right
        [0.6, 0.2, 0.2],  # forebygga false positive
        [0.1, 0.8, 0.1],  # right
        [0.1, 0.7, 0.3],  # forsvara missed
        [0.2, 0.1, 0.1],  # right
        [0.1, 0.1, 0.9],  # right
    ]
)


def hand_built() -> HeadProbabilities:
    return HeadProbabilities(strategy=STRATEGY_PROBS, commitment=one_hot(PREDICTED_COMMITMENT))


def test_metrics_agree_with_sklearn_and_hand_counts() -> None:
    report = evaluate_predictions(GOLD, hand_built(), NO_BOOTSTRAP)
    m = report.metrics
    gold_c = [s.commitment for s in GOLD]

    # commitment: funding 1/1, pending 0/1, support p=1/2 r=1, institution 0/1, none p=2/3 r=1
    f1s = {"funding": 1.0, "pending_proposal": 0.0, "support": 2 / 3, "institution": 0.0, "none": 0.8}
    for label, value in f1s.items():
        assert m[f"commitment_f1_{label}"] == pytest.approx(value)
    assert m["commitment_macro_f1"] == pytest.approx(np.mean(list(f1s.values())))
    assert m["commitment_macro_f1"] == pytest.approx(
        f1_score(gold_c, PREDICTED_COMMITMENT, labels=list(COMMITMENT_LABELS), average="macro", zero_division=0)
    )
    assert m["commitment_accuracy"] == pytest.approx(4 / 6)
    p, r, _, support = precision_recall_fscore_support(gold_c, PREDICTED_COMMITMENT, labels=["none"])
    assert (m["commitment_precision_none"], m["commitment_recall_none"]) == pytest.approx((p[0], r[0]))
    assert m["commitment_support_none"] == support[0] == 2

    # strategy: forebygga tp1 fp1 -> 2/3; forhindra tp2 -> 1; forsvara tp1 fn1 -> 2/3
    assert m["strategy_f1_forebygga"] == pytest.approx(2 / 3)
    assert m["strategy_f1_forhindra"] == pytest.approx(1.0)
    assert m["strategy_f1_forsvara"] == pytest.approx(2 / 3)
    assert m["strategy_macro_f1"] == pytest.approx(7 / 9)
    assert m["strategy_micro_f1"] == pytest.approx(2 * 4 / (2 * 4 + 1 + 1))
    assert m["strategy_exact_match"] == pytest.approx(4 / 6)
    assert (m["n_sentences"], m["n_documents"]) == (6, 3)

    assert report.commitment_confusion[COMMITMENT_LABELS.index("institution")][COMMITMENT_LABELS.index("support")] == 1
    assert report.strategy_confusion["forebygga"] == [[4, 1], [0, 1]]


def test_thresholds_of_the_probabilities_decide_strategy_labels() -> None:
    probs = hand_built()
    probs.strategy_thresholds = np.array([0.7, 0.5, 0.25])  # removes the fp, recovers the missed forsvara
    m = evaluate_predictions(GOLD, probs, NO_BOOTSTRAP).metrics
    assert m["strategy_macro_f1"] == pytest.approx(1.0)
    assert m["strategy_exact_match"] == pytest.approx(1.0)


def test_bootstrap_interval_contains_the_point_estimate() -> None:
    report = evaluate_predictions(GOLD, hand_built(), EvaluateConfig(bootstrap_samples=300, seed=3))
    for key in ("commitment_macro_f1", "commitment_accuracy", "strategy_macro_f1", "strategy_micro_f1"):
        m = report.metrics
        assert m[f"{key}_ci_low"] <= m[key] <= m[f"{key}_ci_high"], key
    assert report.metrics["commitment_accuracy_ci_low"] < report.metrics["commitment_accuracy_ci_high"]


def test_bootstrap_resamples_whole_documents() -> None:
    # document "right" has 5 correct sentences, document "wrong" 5 wrong ones: drawing documents can only give
    # accuracy 0, 1/2 or 1, whereas drawing sentences would give every multiple of 1/10
    gold = np.zeros(10, dtype=np.int64)
    predicted = np.array([0] * 5 + [1] * 5)
    strategy = np.zeros((10, 3), dtype=np.int64)
    distribution = bootstrap_metrics(
        ["right"] * 5 + ["wrong"] * 5,
        gold_commitment=gold,
        predicted_commitment=predicted,
        gold_strategy=strategy,
        predicted_strategy=strategy,
        samples=500,
        seed=0,
    )
    values = set(np.round(distribution["commitment_accuracy"], 6))
    assert values == {0.0, 0.5, 1.0}


def test_ece_is_zero_when_perfectly_calibrated_and_the_gap_otherwise() -> None:
    confidence = np.full(10, 0.7)
    correct = np.array([1] * 7 + [0] * 3)
    assert expected_calibration_error(calibration_bins(confidence, correct)) == pytest.approx(0.0)
    assert expected_calibration_error(calibration_bins(np.full(10, 0.9), np.array([1, 0] * 5))) == pytest.approx(0.4)
    # two bins: 0.2 with 1/5 positive (calibrated), 0.8 with 5/5 (gap 0.2) -> ECE 0.1
    probs = np.array([0.2] * 5 + [0.8] * 5)
    outcome = np.array([1, 0, 0, 0, 0] + [1] * 5)
    bins = calibration_bins(probs, outcome, n_bins=10)
    assert [b.count for b in bins] == [5, 5]
    assert expected_calibration_error(bins) == pytest.approx(0.1)
    assert calibration_bins(np.array([1.0]), np.array([1]))[0].high == 1.0


def test_commitment_ece_uses_the_max_probability() -> None:
    # confidence 0.9 everywhere and 4 of 6 right: ECE = |0.9 - 4/6|
    m = evaluate_predictions(GOLD, hand_built(), NO_BOOTSTRAP).metrics
    assert m["commitment_ece"] == pytest.approx(0.9 - 4 / 6)


def test_tune_thresholds_finds_the_separating_cut() -> None:
    probs = np.array([[0.1], [0.3], [0.35], [0.9]])
    gold = np.array([[0], [0], [1], [1]])
    # every cut in (0.3, 0.35] separates the classes; of the grid points 0.325 and 0.35 the tie goes to
    # the one nearer 0.5
    assert tune_thresholds(probs, gold)[0] == pytest.approx(0.35)
    assert tune_thresholds(probs, np.zeros((4, 1), dtype=int))[0] == 0.5


def test_most_confident_errors_come_first() -> None:
    probs = hand_built()
    probs.commitment[3] = one_hot(["support"], 0.99)[0]  # a very confident wrong answer
    errors = evaluate_predictions(GOLD, probs, NO_BOOTSTRAP).errors
    commitment_errors = [e for e in errors if e["head"] == "commitment"]
    assert commitment_errors[0]["id"] == "b#1" and commitment_errors[0]["confidence"] == pytest.approx(0.99)
    confidences = [e["confidence"] for e in commitment_errors]
    assert confidences == sorted(confidences, reverse=True)
    strategy_errors = [e for e in errors if e["head"] == "strategy"]
    assert {(e["id"], e["predicted"]) for e in strategy_errors} == {
        ("a#1", "forebygga"),
        ("b#1", "not forsvara"),
    }
    assert strategy_errors[0]["confidence"] == pytest.approx(0.7)  # 1 - 0.3 beats 0.6


def test_mismatched_probabilities_are_refused() -> None:
    with pytest.raises(ValueError, match="gold has 6"):
        evaluate_predictions(GOLD, HeadProbabilities(STRATEGY_PROBS[:5], one_hot(PREDICTED_COMMITMENT)[:5]))


def test_write_report_writes_json_csv_and_pngs(tmp_path: Path) -> None:
    report = evaluate_predictions(GOLD, hand_built(), EvaluateConfig(bootstrap_samples=50), model_name="toy")
    written = write_report(report, tmp_path / "toy")
    names = {p.name for p in written}
    assert {"report.json", "errors.csv", "confusion_commitment.png", "confusion_strategy.png"} <= names
    for path in written:
        assert path.is_file() and path.stat().st_size > 0
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert read_report(tmp_path / "toy") == report
    with (tmp_path / "toy" / "errors.csv").open(encoding="utf-8") as handle:
        assert len(list(csv.DictReader(handle))) == len(report.errors)


def test_models_are_scored_on_sentences_in_document_order(tmp_path: Path) -> None:
    sentences = constructed_sentences()
    lexicon = REPO / "configs" / "lexicon.yaml"
    KeywordModel.from_file(lexicon).fit(sentences).save(tmp_path / "keyword")
    MajorityModel().fit(sentences).save(tmp_path / "majority")
    cfg = EvaluateConfig(bootstrap_samples=100)

    reports = evaluate_models([tmp_path / "keyword", tmp_path / "majority"], sentences[::-1], cfg)

    assert list(reports) == ["keyword", "majority"]
    in_memory = evaluate_model(KeywordModel.from_file(lexicon).fit(sentences), sentences, cfg, name="keyword")
    assert reports["keyword"].metrics == in_memory.metrics
    assert reports["keyword"].metrics["commitment_macro_f1"] > reports["majority"].metrics["commitment_macro_f1"]

    table = comparison_table(reports)
    assert table.row_count == 2
    markdown = comparison_markdown(reports)
    assert markdown.count("\n") == 3 and "| keyword |" in markdown
