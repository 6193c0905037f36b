"""Annotation round trip: export -> fill in -> import, validation of annotated rows, agreement."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from labelled_examples import constructed_sentences

from pipeline.annotate.agreement import agreement, agreement_between_files, agreement_table
from pipeline.annotate.export import annotation_rows, export_annotation_file, export_for_annotation
from pipeline.annotate.merge import import_annotations
from pipeline.annotate.sheet import EXPORT_COLUMNS, read_annotation_csv
from pipeline.labelled_data import LabelledDataError, read_labelled, write_labelled
from pipeline.models.keyword import KeywordModel
from pipeline.schema import LabelledSentence, Sentence

REPO = Path(__file__).resolve().parents[1]


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def write_rows(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_export_has_the_columns_neighbours_and_most_uncertain_first(tmp_path: Path) -> None:
    sentences = constructed_sentences()
    model = KeywordModel.from_file(REPO / "configs" / "lexicon.yaml").fit(sentences)
    path = export_for_annotation(sentences, tmp_path / "to_annotate.csv", model)

    assert path.read_bytes()[:3] == b"\xef\xbb\xbf"  # BOM: spreadsheets read UTF-8 correctly
    rows = read_rows(path)
    assert tuple(rows[0]) == EXPORT_COLUMNS
    assert len(rows) == len(sentences)
    uncertainty = [float(r["uncertainty"]) for r in rows]
    assert uncertainty == sorted(uncertainty, reverse=True)
    assert all(0.0 <= u <= 1.0 for u in uncertainty)
    assert all(r["strategy"] == "" and r["commitment"] == "" for r in rows)  # blind by default
    by_id = {r["id"]: r for r in rows}
    assert by_id["doc-b#1"]["previous"] == sentences[4].text and by_id["doc-b#1"]["next"] == sentences[6].text
    assert by_id["doc-b#0"]["previous"] == ""  # neighbours never cross documents
    assert by_id["doc-a#0"]["predicted_commitment"] == "funding"


def test_unlabelled_segmenter_sentences_can_be_exported() -> None:
    sentences = [
        Sentence(doc_id="svar-1", index=1, start=20, end=40, text="Regeringen har inrättat ett center."),
        Sentence(doc_id="svar-1", index=0, start=0, end=19, text="Tack för frågan."),
    ]
    rows = annotation_rows(sentences, limit=1)
    assert [r["id"] for r in rows] == ["svar-1#0"]
    assert rows[0]["next"] == "Regeringen har inrättat ett center."


def test_export_file_reads_segmenter_output_and_a_saved_model(tmp_path: Path) -> None:
    model_dir = tmp_path / "keyword"
    KeywordModel.from_file(REPO / "configs" / "lexicon.yaml").fit(constructed_sentences()).save(model_dir)
    sentences = [
        Sentence(doc_id="svar-2", index=i, start=0, end=1, text=text)
        for i, text in enumerate(["Stockholm den 1 juni.", "Regeringen satsar 5 miljoner kronor på stöd."])
    ]
    source = tmp_path / "sentences.jsonl"
    source.write_text("".join(s.model_dump_json() + "\n" for s in sentences), encoding="utf-8")

    assert export_annotation_file(source, tmp_path / "out.csv", model=model_dir) == 2
    rows = {r["id"]: r for r in read_rows(tmp_path / "out.csv")}
    assert rows["svar-2#1"]["predicted_commitment"] == "funding"
    assert rows["svar-2#0"]["next"] == sentences[1].text

    source.write_text('{"doc_id": "x"}\n', encoding="utf-8")
    with pytest.raises(LabelledDataError, match=":1: not a sentence"):
        export_annotation_file(source, tmp_path / "out.csv")


def test_export_then_import_reproduces_the_labels(tmp_path: Path) -> None:
    sentences = constructed_sentences()
    exported = export_for_annotation(sentences, tmp_path / "review.csv", include_labels=True)
    result = import_annotations(exported, tmp_path / "labelled.jsonl")
    assert (result.added, result.updated, result.unannotated, result.total) == (24, 0, 0, 24)
    assert read_labelled(tmp_path / "labelled.jsonl") == sentences

    again = import_annotations(exported, tmp_path / "labelled.jsonl")
    assert (again.added, again.unchanged, again.total) == (0, 24, 24)


def test_annotator_labels_are_merged_and_unannotated_rows_skipped(tmp_path: Path) -> None:
    sentences = constructed_sentences()
    write_labelled(sentences[:4], tmp_path / "labelled.jsonl")
    rows = read_rows(export_for_annotation(sentences[4:8], tmp_path / "batch.csv"))
    rows[0]["strategy"], rows[0]["commitment"] = "forsvara", "pending_proposal"
    rows[1]["strategy"], rows[1]["commitment"] = "Forhindra ; forsvara", "Institution"  # forgiving format
    write_rows(tmp_path / "batch.csv", rows)

    result = import_annotations(tmp_path / "batch.csv", tmp_path / "labelled.jsonl")

    assert (result.added, result.unannotated, result.total) == (2, 2, 6)
    merged = {s.id: s for s in read_labelled(tmp_path / "labelled.jsonl")}
    assert merged[rows[1]["id"]].strategy == ["forhindra", "forsvara"]
    assert merged[rows[1]["id"]].commitment == "institution"
    assert merged[rows[0]["id"]].sentence_index == int(rows[0]["id"].split("#")[1])


def test_bad_annotations_are_reported_by_line_and_nothing_is_written(tmp_path: Path) -> None:
    rows = read_rows(export_for_annotation(constructed_sentences()[:4], tmp_path / "batch.csv"))
    rows[0]["commitment"] = "none"
    rows[1]["commitment"] = "pengar"  # unknown commitment, line 3
    rows[2]["commitment"], rows[2]["strategy"] = "none", "forebygga;skydda"  # unknown strategy, line 4
    rows[3]["commitment"], rows[3]["id"] = "none", rows[0]["id"]  # duplicate id, line 5
    write_rows(tmp_path / "batch.csv", rows)

    problems = read_annotation_csv(tmp_path / "batch.csv").problems
    assert [p.line for p in problems] == [3, 4, 5]
    assert "pengar" in problems[0].message and "skydda" in problems[1].message and "duplicate" in problems[2].message
    with pytest.raises(LabelledDataError):
        import_annotations(tmp_path / "batch.csv", tmp_path / "labelled.jsonl")
    assert not (tmp_path / "labelled.jsonl").exists()


def test_conflicting_labels_need_overwrite_and_other_splits_keep_their_documents(tmp_path: Path) -> None:
    sentences = constructed_sentences()
    labelled = write_labelled(sentences[:4], tmp_path / "train.jsonl")
    rows = read_rows(export_for_annotation(sentences[:1], tmp_path / "fix.csv", include_labels=True))
    rows[0]["commitment"] = "support"
    write_rows(tmp_path / "fix.csv", rows)

    with pytest.raises(LabelledDataError, match="differ"):
        import_annotations(tmp_path / "fix.csv", labelled)
    result = import_annotations(tmp_path / "fix.csv", labelled, overwrite=True)
    assert result.updated == 1 and read_labelled(labelled)[0].commitment == "support"

    dev = write_labelled(sentences[20:], tmp_path / "dev.jsonl")
    export_for_annotation(sentences[20:21], tmp_path / "leak.csv", include_labels=True)
    with pytest.raises(LabelledDataError, match="already belongs"):
        import_annotations(tmp_path / "leak.csv", labelled, other_splits=[dev])


def label(i: int, strategy: list[str], commitment: str) -> LabelledSentence:
    return LabelledSentence(id=f"d#{i}", doc_id="d", text=f"Mening {i}.", strategy=strategy, commitment=commitment)


def test_agreement_kappa_matches_a_hand_computation(tmp_path: Path) -> None:
    a = [
        label(0, ["forebygga"], "funding"),
        label(1, ["forebygga"], "funding"),
        label(2, [], "none"),
        label(3, [], "none"),
        label(4, [], "support"),
        label(5, [], "none"),
        label(6, [], "none"),  # only A labelled this one
    ]
    b = [
        label(0, ["forebygga"], "funding"),
        label(1, [], "none"),
        label(2, [], "none"),
        label(3, [], "none"),
        label(4, [], "support"),
        label(5, [], "support"),
    ]
    report = agreement(a, b)
    # commitment: observed 4/6; chance (2*1 + 3*3 + 1*2)/36 = 13/36; kappa = (24 - 13) / (36 - 13) = 11/23
    assert report.commitment_kappa == pytest.approx(11 / 23)
    # forebygga: observed 5/6; chance (2*1 + 4*5)/36 = 22/36; kappa = (30 - 22) / (36 - 22) = 4/7; F1 2/3
    assert report.strategy_kappa["forebygga"] == pytest.approx(4 / 7)
    assert report.strategy_f1["forebygga"] == pytest.approx(2 / 3)
    assert math.isnan(report.strategy_kappa["forhindra"])  # nobody used it: undefined
    assert (report.sentences, report.only_in_a, report.only_in_b) == (6, 1, 0)
    assert agreement_table(report).row_count == 5

    from_files = agreement_between_files(
        write_labelled(a, tmp_path / "a.jsonl"), write_labelled(b, tmp_path / "b.jsonl")
    )
    assert from_files.commitment_kappa == pytest.approx(11 / 23)
