"""Evaluation: metrics match scikit-learn and hand counts; intervals resample documents; plots exist;
paired comparisons resample documents once for both models; the evaluate stage writes and logs them."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np
import pytest
from labelled_examples import constructed_sentences
from mlflow import MlflowClient
from sklearn.metrics import f1_score, precision_recall_fscore_support

from pipeline.config import EvaluateConfig, PipelineConfig
from pipeline.evaluate import evaluate_model, evaluate_models, paired_comparison, score_models
from pipeline.labelled_data import write_labelled
from pipeline.metrics import (
    INTERVAL_METRICS,
    bootstrap_metrics,
    calibration_bins,
    expected_calibration_error,
    paired_differences,
    tune_thresholds,
    with_threshold_rule,
)
from pipeline.models.keyword import KeywordModel
from pipeline.models.majority import MajorityModel
from pipeline.reports import (
    comparison_markdown,
    comparison_table,
    paired_markdown,
    paired_table,
    read_report,
    write_report,
)
from pipeline.run import EXIT_FAILED, EXIT_OK, run_stages
from pipeline.schema import COMMITMENT_LABELS, STRATEGY_LABELS, HeadProbabilities, LabelledSentence
from pipeline.scores import evaluate_predictions

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


# --- threshold rules -------------------------------------------------------------------------------------


def test_threshold_rules_half_and_dev() -> None:
    probs = hand_built()
    probs.strategy_thresholds = np.array([0.95, 0.95, 0.95])  # as trained: nothing reaches them
    gold_strategy = np.array([[label in s.strategy for label in STRATEGY_LABELS] for s in GOLD], dtype=int)

    assert with_threshold_rule(GOLD, probs, "as_trained") is probs
    half = with_threshold_rule(GOLD, probs, "half")
    assert half.strategy_thresholds.tolist() == [0.5, 0.5, 0.5]
    assert probs.strategy_thresholds.tolist() == [0.95, 0.95, 0.95]  # a copy, not in place
    dev = with_threshold_rule(GOLD, probs, "dev")
    assert dev.strategy_thresholds.tolist() == tune_thresholds(STRATEGY_PROBS, gold_strategy).tolist()

    as_trained = evaluate_predictions(GOLD, probs, NO_BOOTSTRAP)
    tuned = evaluate_predictions(GOLD, probs, EvaluateConfig(bootstrap_samples=0, threshold_rule="dev"))
    assert as_trained.metrics["strategy_macro_f1"] == 0.0
    assert tuned.metrics["strategy_macro_f1"] == pytest.approx(1.0)  # the tuned cuts separate this toy data
    assert tuned.threshold_rule == "dev" and tuned.strategy_thresholds == dev.strategy_thresholds.tolist()
    assert tuned.metrics["commitment_macro_f1"] == as_trained.metrics["commitment_macro_f1"]
    assert "optimistic" in comparison_markdown({"toy": tuned})
    assert "optimistic" not in comparison_markdown({"toy": as_trained})
    with pytest.raises(ValueError, match="threshold rule 'best'"):
        with_threshold_rule(GOLD, probs, "best")


# --- paired differences ----------------------------------------------------------------------------------


Case = tuple[list[LabelledSentence], HeadProbabilities, HeadProbabilities]


def random_case(n_docs: int = 20, per_doc: int = 6, seed: int = 0) -> Case:
    """Constructed gold labels and two noisy models' probabilities (random, seeded)."""
    rng = np.random.default_rng(seed)
    gold = [
        sentence(i, f"d{d:02d}", [label for label in STRATEGY_LABELS if rng.random() < 0.3],
                 COMMITMENT_LABELS[rng.integers(len(COMMITMENT_LABELS))])
        for d in range(n_docs) for i in range(per_doc)
    ]  # fmt: skip
    models = [
        HeadProbabilities(strategy=rng.random((len(gold), 3)), commitment=rng.dirichlet(np.ones(5), len(gold)))
        for _ in range(2)
    ]
    return gold, models[0], models[1]


def test_identical_models_differ_by_nothing_and_every_resample_is_a_tie() -> None:
    gold, probs, _ = random_case()
    for d in paired_differences(gold, probs, probs, metrics=INTERVAL_METRICS, samples=200).values():
        assert d.model == d.reference
        assert (d.difference, d.mean_difference, d.ci_low, d.ci_high) == (0.0, 0.0, 0.0, 0.0)
        assert (d.share_better, d.share_tied) == (0.0, 1.0)


def test_a_model_better_on_every_document_wins_every_resample() -> None:
    gold, _, _ = random_case()
    gold_c = [COMMITMENT_LABELS.index(s.commitment) for s in gold]
    perfect = HeadProbabilities(
        strategy=np.array([[0.9 if label in s.strategy else 0.1 for label in STRATEGY_LABELS] for s in gold]),
        commitment=np.eye(5)[gold_c] * 0.8 + 0.04,
    )
    # the same, but the first sentence of each document is wrong on both heads
    worse = replace(perfect, strategy=perfect.strategy.copy(), commitment=perfect.commitment.copy())
    for i in range(0, len(gold), 6):
        worse.strategy[i] = 1 - worse.strategy[i]
        worse.commitment[i] = np.roll(worse.commitment[i], 1)
    differences = paired_differences(gold, perfect, worse, metrics=INTERVAL_METRICS, samples=300, seed=5)
    for key, d in differences.items():
        assert d.share_better == 1.0 and d.share_tied == 0.0, key
        assert 0 < d.ci_low <= d.mean_difference <= d.ci_high, key
        assert d.difference == pytest.approx(d.model - d.reference) and d.difference > 0
    # swapped, the reference wins every resample
    swapped = paired_differences(gold, worse, perfect, samples=300, seed=5)["commitment_macro_f1"]
    assert swapped.share_better == 0.0 and swapped.ci_high < 0


def test_paired_resampling_draws_whole_documents_for_both_models() -> None:
    # document "x": model right, reference wrong on all 5 sentences; document "y": the other way round.
    # Drawing 2 documents gives accuracy differences -1, 0 or +1 only (0 half the time); drawing sentences would
    # give every multiple of 1/5 and a tie only a quarter of the time.
    gold = [sentence(i, doc, [], "none") for doc in ("x", "y") for i in range(5)]
    right, wrong = one_hot(["none"]), one_hot(["funding"])
    model = HeadProbabilities(np.zeros((10, 3)), np.vstack([right] * 5 + [wrong] * 5))
    reference = HeadProbabilities(np.zeros((10, 3)), np.vstack([wrong] * 5 + [right] * 5))
    d = paired_differences(gold, model, reference, metrics=["commitment_accuracy"], samples=2000, seed=1)[
        "commitment_accuracy"
    ]
    assert (d.ci_low, d.ci_high) == (-1.0, 1.0)
    assert d.share_tied == pytest.approx(0.5, abs=0.04)
    assert d.share_better == pytest.approx(0.25, abs=0.04)
    assert d.difference == 0.0


def test_paired_draws_are_those_of_the_per_model_intervals() -> None:
    gold, a, b = random_case()
    samples, seed = 400, 7
    doc_ids = [s.doc_id for s in gold]
    gold_c = np.array([COMMITMENT_LABELS.index(s.commitment) for s in gold])
    gold_s = np.array([[label in s.strategy for label in STRATEGY_LABELS] for s in gold], dtype=int)
    alone = [
        bootstrap_metrics(doc_ids, gold_commitment=gold_c, predicted_commitment=p.commitment.argmax(axis=1),
                          gold_strategy=gold_s, predicted_strategy=(p.strategy >= 0.5).astype(int),
                          samples=samples, seed=seed)
        for p in (a, b)
    ]  # fmt: skip
    paired = paired_differences(gold, a, b, metrics=INTERVAL_METRICS, samples=samples, seed=seed)
    reports = [evaluate_predictions(gold, p, NO_BOOTSTRAP).metrics for p in (a, b)]
    for key, d in paired.items():
        diff = alone[0][key] - alone[1][key]
        assert d.mean_difference == pytest.approx(diff.mean()), key
        assert (d.ci_low, d.ci_high) == pytest.approx((np.percentile(diff, 2.5), np.percentile(diff, 97.5))), key
        assert (d.model, d.reference) == pytest.approx((reports[0][key], reports[1][key])), key


def test_paired_differences_are_reproducible_with_the_seed() -> None:
    gold, a, b = random_case()
    first = paired_differences(gold, a, b, samples=300, seed=11)
    assert paired_differences(gold, a, b, samples=300, seed=11) == first
    other = paired_differences(gold, a, b, samples=300, seed=12)
    assert other != first
    assert other["strategy_macro_f1"].difference == first["strategy_macro_f1"].difference  # full data: no draws


def test_paired_differences_refuse_bad_input() -> None:
    gold, a, b = random_case()
    with pytest.raises(ValueError, match="strategy_ece"):
        paired_differences(gold, a, b, metrics=["strategy_ece"])
    with pytest.raises(ValueError, match="samples"):
        paired_differences(gold, a, b, samples=0)
    with pytest.raises(ValueError, match=r"reference.*gold has 120"):
        paired_differences(gold, a, HeadProbabilities(b.strategy[:5], b.commitment[:5]))


def saved_baselines(folder: Path) -> list[Path]:
    sentences = constructed_sentences()
    KeywordModel.from_file(REPO / "configs" / "lexicon.yaml").fit(sentences).save(folder / "baseline-keyword")
    MajorityModel().fit(sentences).save(folder / "baseline-majority")
    return [folder / "baseline-keyword", folder / "baseline-majority"]


def test_paired_comparison_of_saved_models_and_its_renderings(tmp_path: Path) -> None:
    cfg = EvaluateConfig(bootstrap_samples=100, threshold_rule="half")
    scored = score_models(saved_baselines(tmp_path), constructed_sentences(), cfg)
    assert list(scored.probabilities) == ["baseline-keyword", "baseline-majority"]
    assert scored.reports["baseline-keyword"].threshold_rule == "half"
    assert all((p.strategy_thresholds == 0.5).all() for p in scored.probabilities.values())

    paired = paired_comparison(scored, "baseline-majority", cfg)
    assert list(paired.differences) == ["baseline-keyword"]
    d = paired.differences["baseline-keyword"]["commitment_macro_f1"]
    keyword, majority = (scored.reports[k].metrics["commitment_macro_f1"] for k in scored.reports)
    assert d.difference == pytest.approx(keyword - majority)
    assert (paired.n_documents, paired.samples, paired.threshold_rule) == (6, 100, "half")

    markdown = paired_markdown(paired)
    assert "| model | metric | value | baseline-majority |" in markdown
    assert "| baseline-keyword | commitment macro-F1 |" in markdown and "0.5 for every model" in markdown
    assert paired_table(paired).row_count == 2
    assert set(paired.flat_metrics()) == {
        f"paired.baseline-keyword.{m}.{f}"
        for m in ("commitment_macro_f1", "strategy_macro_f1")
        for f in ("diff", "ci_low", "ci_high", "share_better")
    }
    with pytest.raises(ValueError, match="'baseline-tfidf' is not among the scored models"):
        paired_comparison(scored, "baseline-tfidf", cfg)


# --- the evaluate stage ----------------------------------------------------------------------------------


def test_evaluate_stage_writes_and_logs_the_paired_comparison(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    saved_baselines(tmp_path / "models")
    out = tmp_path / "evaluation"
    settings = {
        "name": "paired",
        "stages": ["evaluate"],
        "train": {"output_dir": str(tmp_path / "models")},
        "evaluate": {
            "data": str(write_labelled(constructed_sentences(), tmp_path / "dev.jsonl")),
            "output_dir": str(out),
            "bootstrap_samples": 50,
            "reference": "baseline-majority",
        },
        "tracking": {
            "uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "artifact_location": str(tmp_path / "artifacts"),
            "log_system_metrics": False,
        },
    }
    outcome = run_stages(PipelineConfig.model_validate(settings), ["evaluate"])
    assert outcome.exit_code == EXIT_OK, [s.message for s in outcome.stages]

    paired = json.loads((out / "paired.json").read_text(encoding="utf-8"))
    assert paired["reference"] == "baseline-majority" and list(paired["differences"]) == ["baseline-keyword"]
    assert "| baseline-keyword | strategy macro-F1 |" in (out / "paired.md").read_text(encoding="utf-8")
    client = MlflowClient(tracking_uri=mlflow.get_tracking_uri())
    run = next(
        r for r in client.search_runs([client.get_experiment_by_name("paired").experiment_id])
        if r.data.tags.get("stage") == "evaluate"
    )  # fmt: skip
    diff = paired["differences"]["baseline-keyword"]["commitment_macro_f1"]["difference"]
    assert run.data.metrics["paired.baseline-keyword.commitment_macro_f1.diff"] == pytest.approx(diff)
    assert run.data.tags["evaluate.threshold_rule"] == "as_trained"
    logged = {f.path for f in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/paired.md", "evaluation/paired.json"} <= logged

    # the default reference (baseline-tfidf) was not trained here: no paired comparison, stale files removed
    del settings["evaluate"]["reference"]
    assert run_stages(PipelineConfig.model_validate(settings), ["evaluate"]).exit_code == EXIT_OK
    assert not (out / "paired.md").exists() and not (out / "paired.json").exists()
    assert (out / "comparison.md").is_file()

    # a named reference that was not scored is an error that names it
    settings["evaluate"]["reference"] = "baseline-bert"
    outcome = run_stages(PipelineConfig.model_validate(settings), ["evaluate"])
    assert outcome.exit_code == EXIT_FAILED and "'baseline-bert'" in outcome.stages[-1].message
