"""Batch labelling: rows and summary, rejects and exit status, resuming after SIGKILL, registry models.

Real parts throughout: a TF-IDF model and a micro BERT trained here, the real segmenter and readers, real
subprocesses killed with SIGKILL, a real (sqlite) MLflow registry. Every document and sentence below is
constructed for these tests; none comes from a corpus.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config import BertSpec, LabelConfig, SegmentConfig, TokenizerConfig
from pipeline.io.documents import read_documents
from pipeline.label import count_documents, label_documents, model_from_folder
from pipeline.label_output import EXIT_ALL_LABELLED, EXIT_SOME_REJECTED, LabelRunMismatch
from pipeline.labelling import REJECTED, WARNING
from pipeline.models.base import label_disagreement
from pipeline.models.tfidf import TfidfModel
from pipeline.schema import COMMITMENT_LABELS, STRATEGY_LABELS, Document, HeadProbabilities, with_context
from pipeline.segment import segment_document
from tests.labelled_examples import PARAGRAPHS, constructed_sentences
from tests.labelled_examples import make_documents as constructed_documents

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tfidf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TF-IDF model fitted on the constructed labelled sentences, saved as a model folder."""
    folder = tmp_path_factory.mktemp("tfidf") / "model"
    TfidfModel(min_df=1, tune_thresholds=False).fit(constructed_sentences()).save(folder)
    return folder


def label_config(tmp_path: Path, name: str = "labelled.parquet", **changes: object) -> LabelConfig:
    values: dict[str, object] = {"output": tmp_path / "out" / name, "chunk_documents": 4}
    values.update(changes)
    return LabelConfig(**values)


# --- rows and summary -----------------------------------------------------------------------------------


def test_rows_and_summary_match_the_model_and_the_segmenter(tfidf_dir: Path, tmp_path: Path) -> None:
    model, info = model_from_folder(str(tfidf_dir))
    documents = constructed_documents(11)
    segment_cfg = SegmentConfig()
    result = label_documents(label_config(tmp_path), model, info, documents, segment_cfg, show_progress=False)

    assert result.exit_code == EXIT_ALL_LABELLED
    assert (result.documents, result.labelled, result.rejected, result.warnings) == (11, 11, 0, 0)
    assert result.rejects.read_text() == ""
    assert not result.output.with_name(result.output.name + ".partial").exists()

    rows = pd.read_parquet(result.output)
    expected = [s for d in documents for s in segment_document(d, segment_cfg)]
    assert result.sentences == len(rows) == len(expected)
    assert list(zip(rows.doc_id, rows["index"], rows.start, rows.end, rows.role, rows.text, strict=True)) == [
        (s.doc_id, s.index, s.start, s.end, s.role, s.text) for s in expected
    ]
    # Probabilities are the model's own (duplicates are labelled once and copied, with their context).
    probs = model.predict_proba(with_context((s.doc_id, s.text) for s in expected))
    np.testing.assert_allclose(rows[[f"p_{x}" for x in STRATEGY_LABELS]].to_numpy(), probs.strategy)
    np.testing.assert_allclose(rows[[f"p_{x}" for x in COMMITMENT_LABELS]].to_numpy(), probs.commitment)
    assert list(rows.commitment) == probs.commitment_labels()
    assert [list(labels) for labels in rows.strategy] == probs.strategy_labels()  # a list; empty when none
    assert set(rows.model_name) == {info.name} and set(rows.model_version) == {info.version}
    assert not rows.truncated.any()

    summary = pd.read_parquet(result.summary).set_index("doc_id")
    assert list(summary.index) == [d.id for d in documents]
    for doc_id, group in rows.groupby("doc_id"):
        line = summary.loc[doc_id]
        assert line.sentences == len(group)
        for label in COMMITMENT_LABELS:
            assert line[f"commitment_{label}"] == (group.commitment == label).sum()
        for label in STRATEGY_LABELS:
            assert line[f"strategy_{label}"] == group.strategy.map(lambda x, y=label: y in x).sum()
        assert line.strategy_none == group.strategy.map(len).eq(0).sum()
    first = summary.loc["svar-0000"]
    assert (first.title, first.date) == ("Svar på skriftlig fråga 0", "2021-05-26")
    assert json.loads(first.metadata) == {"constructed": True, "number": 0}
    # every sentence row says which answer it is from: title and date as their own columns
    assert set(rows[rows.doc_id == "svar-0000"].title) == {"Svar på skriftlig fråga 0"}
    assert set(rows.date) == {"2021-05-26"}


def test_who_answered_when_and_about_what_are_columns_of_both_files(tfidf_dir: Path, tmp_path: Path) -> None:
    """Title, date, minister and question title: from the document's fields and metadata (as the Riksdag reader
    gives them) or, for a bare text file, from its heading, dateline and signature; never a JSON string."""
    model, info = model_from_folder(str(tfidf_dir))
    fetched = Document(
        id="riksdagen:HC11234",
        title="Svar på fråga 2024/25:1234 om stöd till anhöriga",
        date="2025-03-12",
        text=PARAGRAPHS[0] + "\n\n" + PARAGRAPHS[2],
        metadata={"minister": "Eva Konstruerad", "questions": [{"id": "2024/25:1234", "title": "Stöd till anhöriga"}]},
    )
    bare = Document(
        id="svar.txt",
        text="Svar på fråga 2024/25:1241 av Anna Exempel (M) Skydd av offentliga platser\n\n"
        "Anna Exempel har frågat mig vilka åtgärder regeringen vidtar.\n\n" + PARAGRAPHS[1] + "\n\n"
        "Stockholm den 12 mars 2025\n\nPer Påhittad",
    )
    plain = Document(id="notis.txt", text=PARAGRAPHS[2])
    cfg = label_config(tmp_path, "facts.jsonl")
    result = label_documents(cfg, model, info, [fetched, bare, plain], SegmentConfig(), show_progress=False)
    expected = {
        "riksdagen:HC11234": (fetched.title, "2025-03-12", "Eva Konstruerad", "Stöd till anhöriga"),
        "svar.txt": ("Skydd av offentliga platser", "2025-03-12", "Per Påhittad", "Skydd av offentliga platser"),
        "notis.txt": (None, None, None, None),
    }
    facts = ["title", "date", "minister", "question_title"]
    rows = [json.loads(line) for line in result.output.read_text(encoding="utf-8").splitlines()]
    summary = [json.loads(line) for line in result.summary.read_text(encoding="utf-8").splitlines()]
    assert {r["doc_id"] for r in rows} == set(expected) == {r["doc_id"] for r in summary}
    for row in rows + summary:
        assert tuple(row[c] for c in facts) == expected[row["doc_id"]], row["doc_id"]
    assert all(isinstance(r["strategy"], list) for r in rows) and [] in [r["strategy"] for r in rows]


def test_sentences_the_segment_stage_cut_are_labelled_as_they_are(tfidf_dir: Path, tmp_path: Path) -> None:
    """`pipeline run` passes the segment stage's output on: the same files as segmenting here, and no second cut."""
    model, info = model_from_folder(str(tfidf_dir))
    documents = [*constructed_documents(9), Document(id="tom", text="  \n ")]
    segment_cfg = SegmentConfig()
    quiet = {"show_progress": False}
    cut_here = label_documents(label_config(tmp_path, "a.parquet"), model, info, documents, segment_cfg, **quiet)
    sentences = [s for d in documents if d.text.strip() for s in segment_document(d, segment_cfg)]
    passed_on = label_documents(
        label_config(tmp_path, "b.parquet"), model, info, documents, segment_cfg, sentences=iter(sentences), **quiet
    )
    for a, b in ((cut_here.output, passed_on.output), (cut_here.summary, passed_on.summary)):
        pd.testing.assert_frame_equal(pd.read_parquet(a), pd.read_parquet(b))
    assert cut_here.rejects.read_text() == passed_on.rejects.read_text() != ""

    # the sentences given are the ones labelled: a document cut otherwise keeps that cut
    first = [s for s in sentences if s.doc_id == "svar-0000"]
    merged = first[0].model_copy(update={"end": first[-1].end, "text": " ".join(s.text for s in first)})
    others = [s for s in sentences if s.doc_id != "svar-0000"]
    given = label_documents(
        label_config(tmp_path, "c.parquet"), model, info, documents, segment_cfg, sentences=[merged, *others], **quiet
    )
    rows = pd.read_parquet(given.output)
    assert rows[rows.doc_id == "svar-0000"].text.tolist() == [merged.text]
    assert len(rows) == len(others) + 1


def test_formats_hold_the_same_rows(tfidf_dir: Path, tmp_path: Path) -> None:
    model, info = model_from_folder(str(tfidf_dir))
    documents = constructed_documents(6)
    frames = {}
    for name in ("l.parquet", "l.jsonl", "l.csv"):
        result = label_documents(
            label_config(tmp_path, name), model, info, documents, SegmentConfig(), show_progress=False
        )
        assert result.summary.name == name.replace("l.", "l.summary.")
        reader = {
            ".parquet": pd.read_parquet,
            ".jsonl": lambda p: pd.read_json(p, lines=True, convert_dates=False),
            ".csv": pd.read_csv,
        }
        frames[name] = reader[result.output.suffix](result.output)
    # JSONL keeps the list; a CSV cell cannot hold one, so there the labels are joined by ";"
    assert frames["l.jsonl"].strategy.map(type).eq(list).all()
    pd.testing.assert_frame_equal(
        frames["l.parquet"].assign(strategy=frames["l.parquet"].strategy.map(list)),
        frames["l.jsonl"],
        check_dtype=False,
    )
    joined = frames["l.parquet"].assign(strategy=frames["l.parquet"].strategy.map(";".join))
    csv = frames["l.csv"].fillna({"strategy": "", "minister": "", "question_title": ""})
    pd.testing.assert_frame_equal(joined.fillna({"minister": "", "question_title": ""}), csv, check_dtype=False)
    with pytest.raises(ValueError, match=r"unknown output format '\.xlsx'"):  # refused with the config
        label_config(tmp_path, "l.xlsx")


# --- nothing lost ---------------------------------------------------------------------------------------


def test_every_document_is_labelled_or_listed_with_its_reason(tfidf_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "inbox"
    folder.mkdir()
    (folder / "a.txt").write_text(PARAGRAPHS[0] + "\n\n" + PARAGRAPHS[2], encoding="utf-8")
    (folder / "empty.txt").write_text("  \n", encoding="utf-8")
    (folder / "latin1.txt").write_bytes("Förslaget bereds.".encode("latin-1"))
    (folder / "long.txt").write_text(" ".join(PARAGRAPHS * 20), encoding="utf-8")
    (folder / "picture.png").write_bytes(b"\x89PNG\r\n")
    lines = [
        json.dumps({"id": "j1", "text": PARAGRAPHS[3]}, ensure_ascii=False),
        "[1, 2]",
        json.dumps({"id": "j1", "text": PARAGRAPHS[4]}, ensure_ascii=False),
    ]
    (folder / "more.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")

    model, info = model_from_folder(str(tfidf_dir))
    cfg = label_config(tmp_path, "inbox.jsonl", max_chars=300, chunk_documents=2)
    result = label_documents(cfg, model, info, read_documents(folder), SegmentConfig(), show_progress=False)

    rejects = [json.loads(line) for line in result.rejects.read_text().splitlines()]
    by_id = {r["id"]: r for r in rejects}
    assert by_id["empty.txt"]["reason"].startswith("empty") and by_id["empty.txt"]["severity"] == REJECTED
    assert "UTF-8" in by_id["latin1.txt"]["reason"] and by_id["latin1.txt"]["severity"] == REJECTED
    assert "unsupported file type" in by_id["picture.png"]["reason"]
    assert "expected a JSON object" in by_id["more.jsonl:2"]["reason"]
    assert by_id["long.txt"]["severity"] == WARNING and "max_chars=300" in by_id["long.txt"]["reason"]
    duplicate = [r for r in rejects if r["id"] == "j1"]
    assert len(duplicate) == 1 and duplicate[0]["reason"].startswith("duplicate id")

    rows = pd.read_json(result.output, lines=True)
    assert set(rows.doc_id) == {"a.txt", "long.txt", "j1"}
    assert rows[rows.doc_id == "long.txt"].end.max() <= 300
    assert " ".join(rows[rows.doc_id == "j1"].text) == PARAGRAPHS[3]  # the first j1, not its duplicate
    summary = pd.read_json(result.summary, lines=True).set_index("doc_id")
    assert bool(summary.loc["long.txt"].truncated) and not bool(summary.loc["a.txt"].truncated)
    assert (result.documents, result.labelled, result.rejected, result.warnings) == (8, 3, 5, 1)
    assert result.labelled + result.rejected == result.documents == count_documents(folder)
    assert result.exit_code == EXIT_SOME_REJECTED


def test_quantizing_a_model_without_torch_is_refused(tfidf_dir: Path, tmp_path: Path) -> None:
    model, info = model_from_folder(str(tfidf_dir))
    with pytest.raises(ValueError, match=r"label\.quantize=dynamic-int8: tfidf model: .* float32 only"):
        label_documents(
            label_config(tmp_path, quantize="dynamic-int8"),
            model,
            info,
            constructed_documents(2),
            SegmentConfig(),
        )


def test_label_disagreement_counts_sentences_whose_labels_differ() -> None:
    strategy = np.array([[0.9, 0.1, 0.1], [0.2, 0.6, 0.1], [0.1, 0.1, 0.1], [0.7, 0.7, 0.2]])
    commitment = np.eye(5)[[0, 1, 4, 3]] * 0.8 + 0.04
    a = HeadProbabilities(strategy, commitment)
    moved_strategy = strategy.copy()
    moved_strategy[1, 1] = 0.4  # sentence 1 loses forhindra
    moved_commitment = commitment.copy()
    moved_commitment[2] = np.eye(5)[2] * 0.8 + 0.04  # sentence 2 changes type
    assert label_disagreement(a, HeadProbabilities(strategy + 0.05, commitment)) == 0.0
    assert label_disagreement(a, HeadProbabilities(moved_strategy, moved_commitment)) == 0.5


# --- resuming -------------------------------------------------------------------------------------------


def test_a_finished_output_is_replaced_with_other_arguments_only_when_asked(tfidf_dir: Path, tmp_path: Path) -> None:
    model, info = model_from_folder(str(tfidf_dir))
    documents = constructed_documents(5)
    cfg = label_config(tmp_path, "done.jsonl")
    label_documents(cfg, model, info, documents, SegmentConfig(), show_progress=False)
    before = cfg.output.read_bytes()
    label_documents(cfg, model, info, documents, SegmentConfig(), show_progress=False)  # the same arguments: fine
    other = cfg.model_copy(update={"max_chars": 120})
    with pytest.raises(
        LabelRunMismatch, match=r"already written by a run with other arguments \(differs in label\.max_chars\)"
    ):
        label_documents(other, model, info, documents, SegmentConfig(), show_progress=False)
    assert cfg.output.read_bytes() == before  # untouched
    replaced = other.model_copy(update={"overwrite": True})
    label_documents(replaced, model, info, documents, SegmentConfig(), show_progress=False)
    assert cfg.output.read_bytes() != before
    label_documents(other, model, info, documents, SegmentConfig(), show_progress=False)  # now it matches


def test_interrupted_run_resumes_and_refuses_other_arguments(tfidf_dir: Path, tmp_path: Path) -> None:
    model, info = model_from_folder(str(tfidf_dir))
    documents = constructed_documents(20)
    cfg = label_config(tmp_path, chunk_documents=3)

    def failing() -> object:
        for i, document in enumerate(documents):
            if i == 10:
                raise RuntimeError("the input went away")
            yield document

    with pytest.raises(RuntimeError, match="went away"):
        label_documents(cfg, model, info, failing(), SegmentConfig(), show_progress=False)
    assert not cfg.output.exists()  # the final file appears only when everything is labelled
    partial = cfg.output.with_name(cfg.output.name + ".partial")
    assert sorted(p.name for p in partial.glob("chunk-*")) == ["chunk-000000", "chunk-000001", "chunk-000002"]

    with pytest.raises(LabelRunMismatch, match=r"differs in label\.max_chars"):
        label_documents(cfg.model_copy(update={"max_chars": 99}), model, info, documents, SegmentConfig())
    with pytest.raises(LabelRunMismatch, match="input differs"):
        label_documents(cfg, model, info, constructed_documents(20, seed=1), SegmentConfig(), show_progress=False)

    resumed = label_documents(cfg, model, info, documents, SegmentConfig(), show_progress=False)
    assert resumed.resumed_chunks == 3 and not partial.exists()
    fresh = label_documents(
        label_config(tmp_path, "fresh.parquet", chunk_documents=3), model, info, documents, SegmentConfig()
    )
    assert resumed.output.read_bytes() == fresh.output.read_bytes()
    assert resumed.summary.read_bytes() == fresh.summary.read_bytes()
    assert (resumed.sentences, resumed.documents) == (fresh.sentences, fresh.documents)


DRIVER = """
import json, sys, time
from pathlib import Path
from pipeline.config import LabelConfig, SegmentConfig
from pipeline.io.documents import read_documents
from pipeline.label import label_documents, model_from_folder

model_dir, documents, output, delay = sys.argv[1:5]
model, info = model_from_folder(model_dir)

def slowly():  # gives the test time to kill the run between chunks
    for item in read_documents(Path(documents)):
        time.sleep(float(delay))
        yield item

cfg = LabelConfig(model=model_dir, input=Path(documents), output=Path(output), chunk_documents=10)
result = label_documents(cfg, model, info, slowly(), SegmentConfig(), show_progress=False)
print(json.dumps({"resumed": result.resumed_chunks, "exit": result.exit_code}))
"""


@pytest.mark.slow
def test_sigkill_at_any_chunk_then_rerun_gives_identical_files(tfidf_dir: Path, tmp_path: Path) -> None:
    documents = constructed_documents(200)
    documents_file = tmp_path / "documents.jsonl"
    lines = [d.model_dump_json() for d in documents]
    lines[57] = "not json"  # a reader reject in the middle of the input
    lines[123] = json.dumps({"id": "tom", "text": ""})
    documents_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER, encoding="utf-8")
    output = tmp_path / "killed" / "labelled.parquet"
    partial = output.with_name(output.name + ".partial")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, str(driver), str(tfidf_dir), str(documents_file), str(output), "0.01"]

    def run_until(committed_chunks: int) -> None:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while len(list(partial.glob("chunk-*"))) < committed_chunks:
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            assert time.monotonic() < deadline, "no chunk was committed within 60 s"
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert not output.exists()

    run_until(1)
    run_until(len(list(partial.glob("chunk-*"))) + 4)
    committed = len(list(partial.glob("chunk-*")))
    assert 5 <= committed < 20

    finished = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    outcome = json.loads(finished.stdout.strip().splitlines()[-1])
    assert outcome["resumed"] >= committed and outcome["exit"] == EXIT_SOME_REJECTED
    assert not partial.exists()

    model, info = model_from_folder(str(tfidf_dir))
    whole = LabelConfig(
        model=str(tfidf_dir),
        input=documents_file,
        output=tmp_path / "whole" / "labelled.parquet",
        chunk_documents=10,
    )
    reference = label_documents(
        whole, model, info, read_documents(documents_file), SegmentConfig(), show_progress=False
    )
    assert output.read_bytes() == reference.output.read_bytes()
    assert output.with_name("labelled.summary.parquet").read_bytes() == reference.summary.read_bytes()
    assert output.with_name("labelled.rejects.jsonl").read_bytes() == reference.rejects.read_bytes()
    rows = pd.read_parquet(output)
    assert not rows.duplicated(["doc_id", "index"]).any()
    assert rows.doc_id.nunique() == 198 and reference.rejected == 2


# --- BERT: truncation flags and int8 --------------------------------------------------------------------


def test_chunks_join_into_large_row_groups_and_the_run_says_where_its_time_went(
    tfidf_dir: Path, tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    model, info = model_from_folder(str(tfidf_dir))
    cfg = label_config(tmp_path, chunk_documents=2)  # 6 chunks
    result = label_documents(cfg, model, info, constructed_documents(11), SegmentConfig(), show_progress=False)
    assert pq.ParquetFile(result.output).metadata.num_row_groups == 1  # not one small group per chunk
    assert pq.ParquetFile(result.summary).metadata.num_row_groups == 1
    assert len(pd.read_parquet(result.output)) == result.sentences

    times = result.timings
    assert {"read", "segment", "infer", "rows", "write", "other", "total"} <= set(times)
    assert all(seconds >= 0 for seconds in times.values()) and times["total"] > 0
    phases = sum(seconds for name, seconds in times.items() if name != "total")
    assert phases == pytest.approx(times["total"], abs=0.01)  # the phases (and other) add up to the wall time


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A micro BERT (2 layers, 32 wide, random encoder) with both heads fitted briefly; max_length 16."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from pipeline.models.bert import BertTwoHeadModel
    from pipeline.models.mlm_corpus import train_tokenizer

    root = tmp_path_factory.mktemp("bert")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(PARAGRAPHS + [s.text for s in constructed_sentences()]) * 3, encoding="utf-8")
    tokenizer = train_tokenizer([corpus], TokenizerConfig(vocab_size=400, min_frequency=1), root / "backbone")
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)  # the encoder keeps its random initial weights; make them the same every run
    BertForMaskedLM(config).save_pretrained(root / "backbone")
    spec = BertSpec(backbone=str(root / "backbone"), max_length=16, epochs=2, batch_size=8, threads=1, seed=3)
    model = BertTwoHeadModel(spec).fit(constructed_sentences())
    model.save(root / "model")
    return root / "model"


@pytest.mark.slow
def test_bert_reads_long_sentences_whole_and_int8_stays_close(bert_dir: Path, tmp_path: Path) -> None:
    model, info = model_from_folder(str(bert_dir))
    long_sentence = "Regeringen avsätter medel till " + ", ".join(["skolor", "kommuner", "polisen"] * 6) + "."
    assert len(model.tokenizer(long_sentence, add_special_tokens=False)["input_ids"]) > 2 * model.max_length_
    documents = [
        *constructed_documents(5),
        Document(id="lång", text=f"{PARAGRAPHS[2]} {long_sentence} {PARAGRAPHS[5]}"),
    ]
    cfg = label_config(tmp_path, "bert.parquet", threads=1)
    result = label_documents(cfg, model, info, documents, SegmentConfig(), show_progress=False)
    rows = pd.read_parquet(result.output)
    # a sentence longer than the model's 16 tokens is read in windows (issue 14): labelled whole, no warning
    assert not rows.truncated.any() and long_sentence in rows.text.tolist()
    assert result.rejects.read_text() == ""
    assert result.exit_code == EXIT_ALL_LABELLED and result.warnings == 0 and result.rejected == 0
    assert pd.read_parquet(result.summary).set_index("doc_id").loc["lång"].truncated_sentences == 0

    # A context model reads "previous [SEP] next" as well; a sentence too long for the model leaves no room
    # for its neighbours and is read in windows without them; nothing is flagged
    context_model = copy.copy(model)
    context_model.spec = model.spec.model_copy(update={"context": True})
    context_cfg = label_config(tmp_path, "bert-context.parquet", threads=1)
    context = label_documents(context_cfg, context_model, info, documents, SegmentConfig(), show_progress=False)
    context_rows = pd.read_parquet(context.output)
    assert not context_rows.truncated.any() and list(context_rows.text) == list(rows.text)
    assert context.exit_code == EXIT_ALL_LABELLED and context.warnings == 0

    # int8 runs only within the 2% agreement tolerance and is refused beyond it; which of the two happens
    # depends on how close this barely trained micro model's probabilities sit to its decision boundaries
    from pipeline.labelling import QuantizationOutOfTolerance

    int8_cfg = label_config(tmp_path, "bert-int8.parquet", threads=1, quantize="dynamic-int8")
    try:
        int8 = label_documents(int8_cfg, model, info, documents, SegmentConfig(), show_progress=False)
    except QuantizationOutOfTolerance as refused:
        assert str(refused).startswith("label.quantize=dynamic-int8: ")
        return
    assert int8.quantization_disagreement is not None and int8.quantization_disagreement <= 0.02
    int8_rows = pd.read_parquet(int8.output)
    columns = [f"p_{x}" for x in (*STRATEGY_LABELS, *COMMITMENT_LABELS)]
    assert np.abs(int8_rows[columns].to_numpy() - rows[columns].to_numpy()).max() < 0.05
    assert list(int8_rows.text) == list(rows.text)


@pytest.mark.slow
def test_bf16_runs_checked_against_float32_or_falls_back(bert_dir: Path, tmp_path: Path) -> None:
    import torch

    model, info = model_from_folder(str(bert_dir))
    documents = constructed_documents(6)
    fp32 = label_documents(label_config(tmp_path, "fp32.parquet", threads=1), model, info, documents, SegmentConfig(),
                           show_progress=False)  # fmt: skip
    assert fp32.precision == "float32" and fp32.quantization_disagreement is None
    cfg = label_config(tmp_path, "bf16.parquet", threads=1, quantize="bf16")
    bf16 = label_documents(cfg, model, info, documents, SegmentConfig(), show_progress=False)
    fp32_rows, bf16_rows = pd.read_parquet(fp32.output), pd.read_parquet(bf16.output)
    columns = [f"p_{x}" for x in (*STRATEGY_LABELS, *COMMITMENT_LABELS)]
    gap = np.abs(bf16_rows[columns].to_numpy() - fp32_rows[columns].to_numpy()).max()
    assert list(bf16_rows.text) == list(fp32_rows.text)
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        assert bf16.precision == "bf16"
        assert bf16.quantization_disagreement is not None and bf16.quantization_disagreement <= 0.02
        assert 0 < gap < 0.05  # bf16 really ran (probabilities moved), and stayed close
    else:
        assert bf16.precision == "float32" and gap == 0
    again = label_documents(label_config(tmp_path, "fp32-again.parquet", threads=1), model, info, documents,
                            SegmentConfig(), show_progress=False)  # fmt: skip
    assert again.precision == "float32"  # the float32 network was kept: configured back, it labels as before
    assert pd.read_parquet(again.output).equals(fp32_rows)


@pytest.mark.slow
def test_a_lower_precision_that_changes_too_many_labels_is_refused(bert_dir: Path, tmp_path: Path) -> None:
    import torch

    from pipeline.labelling import QuantizationOutOfTolerance, sentence_predictor

    model, _ = model_from_folder(str(bert_dir))
    sentences = with_context([("d", p) for p in PARAGRAPHS])
    first = int(model.predict_proba(sentences).commitment[0].argmax())
    float32 = model.network_
    for quantize in ("dynamic-int8", "bf16"):
        predict = sentence_predictor(model, label_config(tmp_path, threads=1, quantize=quantize))
        if model.inference_report().precision == "float32":
            continue  # bf16 on a CPU without it: nothing runs in lower precision, nothing to check
        try:
            predict(sentences)
        except QuantizationOutOfTolerance:
            pass  # the barely trained micro model can sit on its boundaries: refused already, as it should be
        else:
            assert model.inference_report().disagreement is not None  # measured, and within the tolerance
        # A float32 reference whose commitment head is pushed to another kind for every sentence: the
        # lower-precision copy of the real model then disagrees with it on at least the first sentence.
        predict = sentence_predictor(model, label_config(tmp_path, threads=1, quantize=quantize))
        model.network_ = copy.deepcopy(float32)
        with torch.no_grad():
            model.network_.commitment.bias[(first + 1) % len(COMMITMENT_LABELS)] += 1e4
        with pytest.raises(QuantizationOutOfTolerance, match=f"label.quantize={quantize}: precision .* differ"):
            predict(sentences)
        model.network_ = float32


# --- models from the registry ---------------------------------------------------------------------------


@pytest.mark.slow
def test_resolve_model_from_the_registry(tfidf_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    from pipeline import registry

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.create_experiment("label-test", artifact_location=(tmp_path / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment) as run:
        logged = registry.log_sentence_model(tfidf_dir, "sentence_labeller", SegmentConfig())
    version = registry.register(logged.model_uri, "ct-label-test")
    registry.set_champion("ct-label-test", version)

    expected, _ = model_from_folder(str(tfidf_dir))
    sentences = with_context(("d", p) for p in PARAGRAPHS)
    for uri in ("models:/ct-label-test@champion", f"models:/ct-label-test/{version}"):
        model, info = registry.resolve_model(uri, download_dir=tmp_path / "download" / uri.replace("/", "_"))
        assert (info.name, info.version, info.uri) == ("ct-label-test", str(version), uri)
        np.testing.assert_allclose(
            model.predict_proba(sentences).commitment, expected.predict_proba(sentences).commitment
        )
    model, info = registry.resolve_model(f"runs:/{run.info.run_id}/sentence_labeller", download_dir=tmp_path / "run")
    assert info.version == f"run-{run.info.run_id}" and info.name == "sentence_labeller"
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        model_from_folder(str(tmp_path / "nowhere"))
