"""`pipeline report`: the HTML a researcher opens after labelling a batch, on a real labelled batch.

The batch is the bundled constructed sample's answers, labelled by TF-IDF trained on the sample's labels
(all sentences constructed, see data/sample/README.md).
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from pipeline import review_answers
from pipeline.cli import app
from pipeline.config import LabelConfig, SegmentConfig
from pipeline.io.documents import read_documents
from pipeline.label import label_documents
from pipeline.labelled_data import read_training_data
from pipeline.labelling import ModelInfo
from pipeline.models.tfidf import TfidfModel
from pipeline.report import write_report
from pipeline.sample import sample_dir


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sample = sample_dir()
    train, dev = read_training_data([sample / "labelled" / "train.jsonl"], sample / "labelled" / "dev.jsonl")
    model = TfidfModel(min_df=1).fit(train, dev)
    out = tmp_path_factory.mktemp("report") / "labelled_sentences.parquet"
    result = label_documents(
        LabelConfig(output=out),
        model,
        ModelInfo("ct-report-test", "1", "models:/ct-report-test/1"),
        read_documents(sample / "answers.jsonl"),
        SegmentConfig(),
        show_progress=False,
    )
    assert result.labelled == 5 and result.rejected == 0
    return out


def test_report_answers_which_answers_announce_money_with_the_sentences(labelled: Path) -> None:
    page = write_report(labelled).read_text(encoding="utf-8")
    sentences = pd.read_parquet(labelled)
    documents = {d.id: d.text for d in read_documents(sample_dir() / "answers.jsonl")}
    money = sentences[sentences["commitment"] == "funding"]
    inquiries = sentences[sentences["commitment"] == "pending_proposal"]
    assert len(money) and len(inquiries), "the sample batch has both kinds"
    for row in pd.concat([money, inquiries]).itertuples():
        assert html.escape(row.text) in page
        pointer = f"{row.doc_id} [{row.start}–{row.end}]"
        assert html.escape(pointer) in page
        # the pointer leads back to the sentence in the document's own text
        assert "".join(documents[row.doc_id][row.start : row.end].split()) == "".join(row.text.split())
    for minister in ("Tomas Ekebrand", "Erik Vallgren", "Sara Lindholt", "Maria Storvik", "Ingrid Falkvik"):
        assert minister in page
    assert "Commitments over time" in page and "Check these first" in page


def test_report_is_self_contained(labelled: Path, tmp_path: Path) -> None:
    page = write_report(labelled, tmp_path / "r.html").read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') >= 3  # per minister, per answer, over time
    assert not re.search(r"""(?:src|href)=["'](?:https?:)?//""", page)  # nothing fetched from anywhere
    assert "<script" not in page


def test_report_escapes_text(tmp_path: Path, labelled: Path) -> None:
    frame = pd.read_parquet(labelled)
    frame.loc[frame["commitment"] == "funding", "text"] = "<b>Regeringen</b> & kommunerna får 5 miljoner."
    hostile = tmp_path / "hostile.parquet"
    frame.to_parquet(hostile)
    page = write_report(hostile).read_text(encoding="utf-8")
    assert "<b>Regeringen</b>" not in page and "&lt;b&gt;Regeringen&lt;/b&gt; &amp; kommunerna" in page


def test_shares_of_commitment_types_add_up_within_each_dimension(labelled: Path) -> None:
    sentences = review_answers.load_labelled(labelled)
    facts = review_answers.answer_facts(sentences, review_answers.load_summary(labelled))
    for by in ("minister", "doc_id"):
        long = review_answers.commitment_by_strategy(sentences, facts, by)
        sums = long.groupby([by, "strategy"])["share"].sum()
        assert sums.round(9).eq(1.0).all()
        # a sentence counts once per dimension it has (or once under "(none)")
        expected = sum(max(1, len(s)) for s in sentences["strategy"])
        assert long["sentences"].sum() == expected


def test_report_command(labelled: Path, tmp_path: Path) -> None:
    out = tmp_path / "via-cli.html"
    result = CliRunner().invoke(app, ["report", str(labelled), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    missing = CliRunner().invoke(app, ["report", str(tmp_path / "none.parquet")])
    assert missing.exit_code == 1 and "none.parquet" in missing.output


def test_answer_facts_take_the_question_title_when_the_document_has_no_title(labelled: Path) -> None:
    sentences = review_answers.load_labelled(labelled)
    summary = review_answers.load_summary(labelled)
    facts = review_answers.answer_facts(sentences, summary).set_index("doc_id")
    metadata = {
        d: json.loads(m) if isinstance(m, str) else m
        for d, m in zip(summary["doc_id"], summary["metadata"], strict=True)
    }
    for doc_id, title in facts["title"].items():
        assert title, doc_id
        questions = (metadata[doc_id].get("answer") or {}).get("questions") or []
        if questions and not summary.set_index("doc_id").loc[doc_id, "title"]:
            assert questions[0]["title"] in title
