"""The data-wrangling behind the review notebooks, on small frames built here (all texts constructed)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipeline import review_answers, review_runs
from pipeline.schema import COMMITMENT_LABELS, STRATEGY_LABELS


def _row(doc_id, index, text, strategy, commitment, role="body", p_strategy=None, p_commitment=None):
    p_strategy = p_strategy or [0.9 if label in strategy.split(";") else 0.1 for label in STRATEGY_LABELS]
    p_commitment = p_commitment or [0.85 if label == commitment else 0.0375 for label in COMMITMENT_LABELS]
    return {
        "doc_id": doc_id,
        "index": index,
        "role": role,
        "text": text,
        "strategy": strategy,
        **{f"p_{label}": p for label, p in zip(STRATEGY_LABELS, p_strategy, strict=True)},
        "commitment": commitment,
        **{f"p_{label}": p for label, p in zip(COMMITMENT_LABELS, p_commitment, strict=True)},
    }


@pytest.fixture
def labelled(tmp_path):
    rows = [
        _row("a", 0, "Svar på fråga 2030/31:1 av Påhittad Person (X) Något", "", "none", role="heading"),
        _row("a", 1, "Kommunen får 5 miljoner kronor för förebyggande arbete.", "forebygga", "funding"),
        _row(
            "a", 2, "En utredare ska se över skyddet av torg och stationer.", "forsvara;forhindra",
            "pending_proposal", p_strategy=[0.1, 0.55, 0.9],
        ),
        _row("a", 3, "Stockholm den 3 april 2030", "", "none", role="dateline"),
        _row("a", 4, "Påhittad Minister", "", "none", role="signature"),
        _row(
            "b", 0, "Anhöriga kan ringa en stödlinje.", "forebygga", "support",
            p_commitment=[0.1, 0.1, 0.4, 0.3, 0.1],
        ),
        _row("b", 1, "Hotet är allvarligt.", "", "none"),
    ]  # fmt: skip
    path = tmp_path / "labelled_sentences.parquet"
    pd.DataFrame(rows).to_parquet(path)
    return path


def test_load_labelled_splits_strategy_and_refuses_other_files(labelled, tmp_path):
    frame = review_answers.load_labelled(labelled)
    assert frame.loc[2, "strategy"] == ["forsvara", "forhindra"]
    assert frame.loc[0, "strategy"] == []
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps({"doc_id": "a", "text": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.jsonl: not a labelled-sentences file; missing column"):
        review_answers.load_labelled(broken)
    with pytest.raises(FileNotFoundError, match=r"nowhere\.parquet"):
        review_answers.load_labelled(tmp_path / "nowhere.parquet")


def test_answer_facts_reads_signature_and_dateline_then_prefers_summary(labelled):
    sentences = review_answers.load_labelled(labelled)
    facts = review_answers.answer_facts(sentences).set_index("doc_id")
    assert facts.loc["a", "minister"] == "Påhittad Minister"
    assert facts.loc["a", "date"] == "2030-04-03" and facts.loc["a", "year"] == 2030
    assert facts.loc["b", "minister"] == "(unknown)" and pd.isna(facts.loc["b", "year"])

    summary = pd.DataFrame(
        {
            "doc_id": ["a", "b"],
            "title": ["Svar A", "Svar B"],
            "date": [None, "2029-12-01"],
            "metadata": [
                json.dumps({"answer": {"minister": "Annan Minister"}}),
                json.dumps({"minister": "M B"}),
            ],
        }
    )
    facts = review_answers.answer_facts(sentences, summary).set_index("doc_id")
    assert facts.loc["a", "minister"] == "Annan Minister" and facts.loc["a", "year"] == 2030
    assert facts.loc["b", "minister"] == "M B" and facts.loc["b", "year"] == 2029
    assert facts.loc["b", "title"] == "Svar B"


def test_answer_facts_take_the_rows_own_columns_first(labelled):
    """Files labelled now carry title, date, minister and question title on every row; those win, and a row
    without them (None) still falls back to the signature and dateline."""
    sentences = review_answers.load_labelled(labelled)
    sentences["title"] = sentences["doc_id"].map({"a": "Svar på fråga A", "b": None})
    sentences["date"] = sentences["doc_id"].map({"a": "2031-01-02", "b": None})
    sentences["minister"] = sentences["doc_id"].map({"a": None, "b": "Eva Konstruerad"})
    sentences["question_title"] = sentences["doc_id"].map({"a": "Fråga A", "b": None})
    facts = review_answers.answer_facts(sentences).set_index("doc_id")
    assert facts.loc["a", ["title", "date", "minister", "question_title"]].tolist() == [
        "Svar på fråga A", "2031-01-02", "Påhittad Minister", "Fråga A",
    ]  # fmt: skip
    assert facts.loc["a", "year"] == 2031
    assert facts.loc["b", "minister"] == "Eva Konstruerad" and pd.isna(facts.loc["b", "title"])
    per_minister = review_answers.label_counts(sentences, facts, "minister")["sentences"].to_dict()
    assert per_minister == {"Eva Konstruerad": 2, "Påhittad Minister": 5}


def test_label_counts_per_answer_and_per_minister(labelled):
    sentences = review_answers.load_labelled(labelled)
    facts = review_answers.answer_facts(sentences)
    per_answer = review_answers.label_counts(sentences, facts, "doc_id")
    assert per_answer.loc["a"].to_dict() == {
        "sentences": 5, "forebygga": 1, "forhindra": 1, "forsvara": 1, "no strategy": 3,
        "funding": 1, "pending_proposal": 1, "support": 0, "institution": 0, "none": 3,
    }  # fmt: skip
    per_minister = review_answers.label_counts(sentences, facts, "minister")
    assert per_minister["sentences"].to_dict() == {"(unknown)": 2, "Påhittad Minister": 5}
    with pytest.raises(ValueError, match="cannot group by 'party'"):
        review_answers.label_counts(sentences, facts, "party")


def test_review_first_ranks_the_least_sure_decision_first(labelled):
    sentences = review_answers.load_labelled(labelled)
    ranked = review_answers.review_first(sentences, n=3)
    # b#0: commitment 0.4 is the weakest of all; a#2: forhindra given at p=0.55 comes next
    assert list(zip(ranked["doc_id"], ranked["index"], strict=True))[:2] == [("b", 0), ("a", 2)]
    assert ranked.loc[0, "weakest_head"] == "commitment" and ranked.loc[0, "confidence"] == pytest.approx(0.4)
    assert ranked.loc[1, "weakest_head"] == "strategy" and ranked.loc[1, "confidence"] == pytest.approx(0.55)
    assert len(ranked) == 3


def _runs() -> pd.DataFrame:
    start = pd.Timestamp("2030-01-01", tz="UTC")
    return pd.DataFrame(
        {
            "run_id": ["r1", "r2", "r3"],
            "status": ["FINISHED", "FINISHED", "FINISHED"],
            "start_time": [start, start, start],
            "end_time": [start + pd.Timedelta(seconds=s) for s in (30, 5, 60)],
            "tags.mlflow.runName": ["evaluate", "model", "pipeline:x"],
            "tags.stage": ["evaluate", "train", None],
            "tags.model": [None, "model", None],
            "params.train.model.kind": [None, None, "tfidf"],
            "params.kind": [None, "tfidf", None],
            "metrics.tfidf.commitment_macro_f1": [0.6, None, None],
            "metrics.tfidf.commitment_macro_f1_ci_low": [0.5, None, None],
            "metrics.tfidf.commitment_macro_f1_ci_high": [0.7, None, None],
            "metrics.majority.commitment_macro_f1": [0.1, None, None],
            "metrics.tfidf.commitment_f1_support": [0.75, None, None],
            "metrics.tfidf.strategy_f1_forsvara": [0.5, None, None],
            "metrics.tfidf.strategy_precision_forsvara": [0.9, None, None],
            "metrics.strategy_macro_f1": [None, 0.4, 0.4],  # the model's run and the pipeline run's copy
            "metrics.strategy_macro_f1_ci_low": [None, 0.3, 0.3],
            "metrics.strategy_macro_f1_ci_high": [None, 0.5, 0.5],
            "metrics.dev_loss": [None, 1.0, None],
        }
    )


def test_runs_table_keeps_key_params_and_prefixed_metrics():
    table = review_runs.runs_table(_runs())
    assert list(table["duration_s"]) == [30.0, 5.0, 60.0]
    assert table.loc[2, "train.model.kind"] == "tfidf"
    assert table.loc[0, "tfidf.commitment_macro_f1"] == 0.6
    assert "dev_loss" not in table.columns and "tfidf.commitment_macro_f1_ci_low" not in table.columns


def test_model_scores_and_per_class_scores_parse_metric_names():
    scores = review_runs.model_scores(_runs()).set_index(["model", "metric"])
    assert scores.loc[("tfidf", "commitment_macro_f1"), "ci_low"] == 0.5
    assert scores.loc[("majority", "commitment_macro_f1"), "value"] == 0.1
    assert scores.loc[("model", "strategy_macro_f1"), "value"] == 0.4  # unprefixed: the model run's tag
    # no run name posing as a model: neither the evaluate run nor the pipeline run's headline copy
    assert set(scores.index.get_level_values("model")) == {"tfidf", "majority", "model"}
    per_class = review_runs.per_class_scores(_runs())
    assert sorted(zip(per_class["head"], per_class["label"], per_class["value"], strict=True)) == [
        ("commitment", "support", 0.75),
        ("strategy", "forsvara", 0.5),
    ]


def test_model_runs_table_is_one_row_per_model_with_settings_and_intervals():
    table = review_runs.model_runs_table(_runs())
    assert list(table["model"]) == ["model"]
    row = table.iloc[0]
    assert row["kind"] == "tfidf"
    assert (row["strategy_macro_f1_ci_low"], row["strategy_macro_f1"], row["strategy_macro_f1_ci_high"]) == (
        0.3,
        0.4,
        0.5,
    )


def test_alias_versions_reads_the_aliases_column():
    versions = pd.DataFrame(
        {"name": ["m", "m"], "version": [2, 1], "aliases": ["challenger", "champion"], "run_id": ["x", "y"]}
    )
    aliases = review_runs.alias_versions(versions).set_index("alias")
    assert aliases.loc["champion", "version"] == 1 and aliases.loc["challenger", "version"] == 2
