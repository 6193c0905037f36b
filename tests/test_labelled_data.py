"""Labelled data: the validator finds every bad line by number; grouped splits never split a document."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from labelled_examples import constructed_sentences, write_jsonl

from pipeline.labelled_data import (
    LabelledDataError,
    check_labelled_file,
    check_splits,
    grouped_folds,
    grouped_split,
    in_document_order,
    load_dataset_dict,
    read_labelled,
    read_training_data,
    sentence_texts,
    to_dataset,
    validate_files,
    write_labelled,
)
from pipeline.schema import LabelledSentence


def good(i: int, doc: str = "doc-x") -> dict:
    return {"id": f"{doc}#{i}", "doc_id": doc, "text": f"Mening nummer {i} om beredskap.", "strategy": [],
            "commitment": "none", "sentence_index": i}  # fmt: skip


def test_validator_reports_each_kind_of_bad_line_with_its_line_number(tmp_path: Path) -> None:
    lines = [
        json.dumps(good(0)),  # 1: fine
        '{"id": "x#1", "doc_id": "x", "text": "Trasig rad"',  # 2: bad JSON
        json.dumps({k: v for k, v in good(2).items() if k != "commitment"}),  # 3: missing field
        json.dumps({**good(3), "strategy": ["forebygga", "skydda"]}),  # 4: unknown strategy label
        json.dumps({**good(4), "commitment": "pengar"}),  # 5: unknown commitment label
        json.dumps(good(0)),  # 6: duplicate id of line 1
        "",  # 7: blank lines are allowed
        json.dumps(["inte", "ett", "objekt"]),  # 8: not an object
        json.dumps({**good(9), "text": "  "}),  # 9: empty text
        json.dumps(good(10)),  # 10: fine
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    sentences, problems = check_labelled_file(path)

    assert [s.id for s in sentences] == ["doc-x#0", "doc-x#10"]
    by_line = {p.line: p.message for p in problems}
    assert sorted(by_line) == [2, 3, 4, 5, 6, 8, 9]
    assert "bad JSON" in by_line[2]
    assert "missing field 'commitment'" in by_line[3]
    assert "skydda" in by_line[4] and "strategy" in by_line[4]
    assert "pengar" in by_line[5] and "commitment" in by_line[5]
    assert "duplicate id 'doc-x#0'" in by_line[6] and "line 1" in by_line[6]
    assert "JSON object" in by_line[8]
    assert "empty" in by_line[9]
    assert all(str(p).startswith(f"{path}:{p.line}:") for p in problems)

    with pytest.raises(LabelledDataError) as raised:
        read_labelled(path)
    assert len(raised.value.problems) == 7
    assert f"{path}:4:" in str(raised.value)


def test_a_document_in_two_splits_is_reported_where_it_reappears(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", [good(0, "doc-a"), good(1, "doc-a"), good(0, "doc-b")])
    dev = write_jsonl(tmp_path / "dev.jsonl", [good(0, "doc-c"), good(5, "doc-a")])

    data, problems = check_splits({"train": [train], "dev": [dev]})

    assert len(problems) == 1
    assert problems[0].source == str(dev) and problems[0].line == 2
    assert "doc-a" in problems[0].message and "'train'" in problems[0].message
    assert [s.id for s in data["dev"]] == ["doc-c#0"]
    with pytest.raises(LabelledDataError, match="must stay in one split"):
        read_training_data([train], dev)


def test_validate_files_treats_each_file_as_a_split(tmp_path: Path) -> None:
    first = write_jsonl(tmp_path / "a.jsonl", [good(0, "doc-a"), {**good(1, "doc-a"), "commitment": "x"}])
    second = write_jsonl(tmp_path / "b.jsonl", [good(0, "doc-b"), good(1, "doc-a")])
    problems = validate_files([first, second])
    assert [(p.source, p.line) for p in problems] == [(str(first), 2), (str(second), 2)]
    assert validate_files([first.with_name("none.jsonl")])[0].message == "file not found"
    clean = write_jsonl(tmp_path / "c.jsonl", [good(0, "doc-c")])
    assert validate_files([clean]) == []


def test_an_id_repeated_across_files_is_reported(tmp_path: Path) -> None:
    first = write_jsonl(tmp_path / "a.jsonl", [good(0, "doc-a")])
    second = write_jsonl(tmp_path / "b.jsonl", [good(1, "doc-a"), good(0, "doc-a")])
    _, problems = check_splits({"train": [first, second]})
    assert [(p.source, p.line) for p in problems] == [(str(second), 2)]
    assert "also in" in problems[0].message


def test_training_data_reads_clean_files_and_refuses_a_missing_one(tmp_path: Path) -> None:
    sentences = constructed_sentences()
    train = write_labelled([s for s in sentences if s.doc_id != "doc-f"], tmp_path / "train.jsonl")
    dev = write_labelled([s for s in sentences if s.doc_id == "doc-f"], tmp_path / "dev.jsonl")
    got_train, got_dev = read_training_data([train], dev)
    assert got_train + (got_dev or []) == sentences
    with pytest.raises(LabelledDataError, match="file not found"):
        read_training_data([tmp_path / "nowhere.jsonl"], dev)


@settings(max_examples=40, deadline=None)
@given(
    doc_sizes=st.lists(st.integers(min_value=1, max_value=6), min_size=2, max_size=25),
    fraction=st.floats(min_value=0.1, max_value=0.6),
    seed=st.integers(min_value=0, max_value=10_000),
)
def test_grouped_split_never_splits_a_document(doc_sizes: list[int], fraction: float, seed: int) -> None:
    sentences = [
        LabelledSentence(id=f"d{d}#{i}", doc_id=f"d{d}", text="En mening.", strategy=[], commitment="none")
        for d, size in enumerate(doc_sizes)
        for i in range(size)
    ]
    train, dev = grouped_split(sentences, dev_fraction=fraction, seed=seed)
    assert {s.doc_id for s in train}.isdisjoint({s.doc_id for s in dev})
    assert sorted(s.id for s in train + dev) == sorted(s.id for s in sentences)
    assert train and dev


def test_grouped_folds_hold_out_each_sentence_once_and_keep_documents_whole() -> None:
    sentences = constructed_sentences()
    folds = grouped_folds(sentences, n_folds=3, seed=1)
    held_out = sorted(i for _, held in folds for i in held)
    assert held_out == list(range(len(sentences)))
    for fit_idx, held_idx in folds:
        assert {sentences[i].doc_id for i in fit_idx}.isdisjoint({sentences[i].doc_id for i in held_idx})


def test_document_order_and_context_never_cross_documents() -> None:
    sentences = constructed_sentences()
    shuffled = sentences[::-1]
    ordered = in_document_order(shuffled)
    assert ordered == sorted(sentences, key=lambda s: (s.doc_id, s.sentence_index))
    texts = sentence_texts(ordered)
    assert texts[0].previous == "" and texts[0].next == ordered[1].text
    last_of_a = max(i for i, s in enumerate(ordered) if s.doc_id == "doc-a")
    assert texts[last_of_a].next == ""
    assert texts[last_of_a + 1].previous == ""


def test_hf_datasets_have_the_schema_columns(tmp_path: Path) -> None:
    sentences = constructed_sentences()
    dataset = to_dataset(sentences)
    assert dataset.num_rows == len(sentences)
    assert dataset[14]["strategy"] == ["forebygga", "forsvara"]
    assert set(dataset.column_names) == {"id", "doc_id", "sentence_index", "text", "strategy", "commitment"}

    train = write_labelled(sentences[:12], tmp_path / "train.jsonl")
    dev = write_labelled(sentences[12:], tmp_path / "dev.jsonl")
    splits = load_dataset_dict([train], dev)
    assert (splits["train"].num_rows, splits["dev"].num_rows) == (12, 12)


def test_the_shared_gold_data_is_valid() -> None:
    shared = os.environ.get("PIPELINE_SHARED_DIR", str(Path(__file__).resolve().parents[2] / "shared"))
    gold = Path(shared) / "gold"
    if not (gold / "train.jsonl").is_file():
        pytest.skip("shared gold data not available (set PIPELINE_SHARED_DIR)")
    train, dev = read_training_data([gold / "train.jsonl"], gold / "dev.jsonl")
    assert len(train) > 1000 and dev and len(dev) > 100
