"""Document readers, writers, screening of bad input and the ingest stage.

Every text here is constructed for the tests (invented sentences and names).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import docx
import pytest

from pipeline.config import IngestConfig
from pipeline.ingest import ingest
from pipeline.io.documents import read_documents, write_documents
from pipeline.io.rejects import Reject, write_rejects
from pipeline.schema import Document
from pipeline.screening import screen_document
from tests.labelled_examples import ENGLISH, SWEDISH

ANSWER = (
    "Svar på fråga 2030/31:99 av Anna Exempel (X) Om stödet\n"
    "Anna Exempel har frågat mig om stödet till kommunerna. Stödet ökar nästa år.\n"
    "Exempelstad den 3 mars 2031\n"
    "Bo Minister"
)


def _write_jsonl(path: Path, rows: list[object]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def _split(items: list[Document | Reject]) -> tuple[list[Document], list[Reject]]:
    return [i for i in items if isinstance(i, Document)], [i for i in items if isinstance(i, Reject)]


# --- readers --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["docs.jsonl", "docs.jsonl.gz"])
def test_read_jsonl_documents(tmp_path: Path, name: str) -> None:
    rows = [
        {
            "id": "a",
            "text": SWEDISH,
            "title": "Uppdrag",
            "date": "2031-01-02",
            "category": "artiklar",
            "year": 2031,
        },
        {"id": 7, "text": "Kort text.", "metadata": {"source": "test"}},
    ]
    docs, rejects = _split(list(read_documents(_write_jsonl(tmp_path / name, rows))))
    assert rejects == []
    assert docs[0].id == "a" and docs[0].title == "Uppdrag" and docs[0].date == "2031-01-02"
    assert docs[0].metadata == {"category": "artiklar", "year": 2031}
    assert docs[1].id == "7" and docs[1].metadata == {"source": "test"}


def test_bad_jsonl_lines_are_rejected_one_by_one(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    good = json.dumps({"id": "ok", "text": SWEDISH}, ensure_ascii=False).encode()
    bad_bytes = b'{"id": "latin1", "text": "r\xe4ttvisa"}'  # Latin-1, not UTF-8
    path.write_bytes(
        b"\n".join([good, b"{not json", b'{"id": "x"}', b"[1, 2]", bad_bytes, b'{"id": "n", "text": 5}', good])
    )
    docs, rejects = _split(list(read_documents(path)))
    assert [d.id for d in docs] == ["ok", "ok"]
    reasons = {r.id: r.reason for r in rejects}
    assert reasons == {
        "docs.jsonl:2": "line 2: not valid JSON: Expecting property name enclosed in double quotes at column 2 "
        "(found 'n')",
        "x": "line 3: missing field 'text'",
        "docs.jsonl:4": "line 4: expected a JSON object, got list",
        "docs.jsonl:5": "line 5: not valid UTF-8 (invalid continuation byte)",
        "n": "line 6: field 'text' must be a string, got int",
    }
    assert all(r.source == str(path) for r in rejects)


def test_truncated_gzip_keeps_what_was_read(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl.gz"
    rows = [{"id": str(i), "text": SWEDISH} for i in range(200)]
    _write_jsonl(path, rows)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    docs, rejects = _split(list(read_documents(path)))
    assert 0 < len(docs) < 200
    assert len(rejects) == 1 and "cannot read the rest of the file" in rejects[0].reason


def _make_docx(path: Path) -> None:
    document = docx.Document()
    document.core_properties.title = "Ett svar"
    document.add_heading("Bakgrund", level=2)
    document.add_paragraph("Regeringen har beslutat om ett uppdrag. Det gäller kommunerna.")
    document.add_paragraph("första punkten", style="List Bullet")
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text = "År"
    table.rows[0].cells[1].text = "2031"
    document.save(str(path))


def test_read_folder_of_txt_md_html_and_docx(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("\ufeffEn text i en fil.", encoding="utf-8")
    (folder / "b.md").write_text("## Rubrik\n\nEtt stycke.", encoding="utf-8")
    (folder / "sub" / "c.html").write_text(
        "<html><head><title>Sidan</title></head><body><p>Ett stycke &amp; mer.</p></body></html>",
        encoding="utf-8",
    )
    _make_docx(folder / "d.docx")
    (folder / ".hidden.txt").write_text("hoppas över", encoding="utf-8")
    (folder / "e.pdf").write_bytes(b"%PDF-1.4")
    docs, rejects = _split(list(read_documents(folder)))
    by_id = {d.id: d for d in docs}
    assert sorted(by_id) == ["a.txt", "b.md", "d.docx", "sub/c.html"]
    assert by_id["a.txt"].text == "En text i en fil."
    assert by_id["sub/c.html"].title == "Sidan" and "Ett stycke & mer." in by_id["sub/c.html"].text
    assert by_id["d.docx"].title == "Ett svar"
    assert by_id["d.docx"].text == (
        "## Bakgrund\n\nRegeringen har beslutat om ett uppdrag. Det gäller kommunerna.\n\n"
        "* första punkten\n\n| År | 2031 |"
    )
    assert [(r.id, r.reason.split(";")[0]) for r in rejects] == [("e.pdf", "unsupported file type .pdf")]


def test_folder_reports_undecodable_binary_and_broken_docx_files(tmp_path: Path) -> None:
    (tmp_path / "latin1.txt").write_bytes("Rättvisa för alla.".encode("latin-1"))
    (tmp_path / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (tmp_path / "broken.docx").write_bytes(b"this is not a zip file")
    (tmp_path / "ok.txt").write_text(SWEDISH, encoding="utf-8")
    docs, rejects = _split(list(read_documents(tmp_path)))
    assert [d.id for d in docs] == ["ok.txt"]
    reasons = {r.id: r.reason for r in rejects}
    assert reasons["latin1.txt"].startswith("not valid UTF-8: byte 0xe4 at offset 1")
    assert reasons["image.txt"] == "binary file (contains NUL bytes), not text"
    assert reasons["broken.docx"].startswith("not a readable Word .docx file")


def test_read_single_file_and_missing_path(tmp_path: Path) -> None:
    path = tmp_path / "svar.txt"
    path.write_text(ANSWER, encoding="utf-8")
    [doc] = list(read_documents(path))
    assert isinstance(doc, Document) and doc.id == "svar.txt" and doc.text == ANSWER
    with pytest.raises(FileNotFoundError, match=r"missing\.jsonl: no such file or folder"):
        list(read_documents(tmp_path / "missing.jsonl"))


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.gz"])
def test_write_and_read_back_documents(tmp_path: Path, name: str) -> None:
    docs = [Document(id="a", text=SWEDISH, title="T", date="2031-01-01", metadata={"k": [1, 2]})]
    assert write_documents(tmp_path / name, docs) == 1
    assert list(read_documents(tmp_path / name)) == docs
    assert not list(tmp_path.glob(".*.tmp*"))  # nothing left beside the file
    assert write_rejects(tmp_path / "rejects.jsonl", [Reject(id="x", source="s", reason="r")]) == 1
    assert json.loads((tmp_path / "rejects.jsonl").read_text()) == {
        "id": "x",
        "source": "s",
        "reason": "r",
        "severity": "rejected",
    }


# --- encodings and JSONL reasons -----------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_text_files_in_utf16_or_with_a_bom_are_read(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "svar.txt"
    path.write_bytes(SWEDISH.encode(encoding))  # "utf-16"/"utf-32" write a BOM; -le/-be do not
    docs, rejects = _split(list(read_documents(path)))
    assert rejects == [] and docs[0].text == SWEDISH


def test_binary_and_latin1_files_are_rejected_with_the_true_reason(tmp_path: Path) -> None:
    (tmp_path / "bin.txt").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "latin1.txt").write_bytes(SWEDISH.encode("latin-1"))
    docs, rejects = _split(list(read_documents(tmp_path)))
    reasons = {r.id: r.reason for r in rejects}
    assert docs == [] and reasons["bin.txt"] == "binary file (contains NUL bytes), not text"
    assert (
        reasons["latin1.txt"] == "not valid UTF-8: byte 0xf6 at offset 50 cannot be decoded (re-save the file as UTF-8)"
    )


def test_jsonl_null_broken_blank_and_bom_lines_get_complete_reasons(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    lines = [
        json.dumps({"id": "ok", "text": SWEDISH}, ensure_ascii=False),
        json.dumps({"id": "null", "text": None}),
        "",
        '{"id": "tab", "text": "a\tb"}',  # a raw tab inside a JSON string
        "   ",
        json.dumps({"text": SWEDISH}, ensure_ascii=False),
    ]
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode("utf-8") + b"\n")
    docs, rejects = _split(list(read_documents(path)))
    assert [d.id for d in docs] == ["ok"]  # the BOM before line 1 is not part of the JSON
    reasons = {r.id: (r.reason, r.severity) for r in rejects}
    assert reasons == {
        "null": ("line 2: field 'text' is null", "rejected"),
        "docs.jsonl:4": ("line 4: not valid JSON: Invalid control character at column 25 (found '\\t')", "rejected"),
        "docs.jsonl:6": ("line 6: missing field 'id'", "rejected"),
        "docs.jsonl": ("2 blank line(s) skipped (line 3, 5): no document there", "note"),
    }


# --- screening ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason_start"),
    [
        ("", "empty document"),
        (" \n\t \u00a0 ", "empty document"),
        ("x" * 101, "document has 101 characters; the limit is 100"),
        (SWEDISH[:40] + "\x01\x02\x03\x04\x05\x06", "looks binary"),
        ("<div><script>" + "var x = 1;" * 9 + "</script><p>Hej.</p></div>", "HTML markup soup"),
        (ENGLISH, "does not look like Swedish"),
    ],
)
def test_screen_document_reasons(text: str, reason_start: str) -> None:
    reason = screen_document(Document(id="d", text=text), max_chars=100 if len(text) == 101 else 10_000)
    assert reason is not None and reason.startswith(reason_start)


def test_screen_document_accepts_swedish_short_text_and_html_with_content() -> None:
    assert screen_document(Document(id="d", text=SWEDISH), max_chars=10_000) is None
    assert screen_document(Document(id="d", text="OK."), max_chars=10_000) is None  # too short to judge
    assert screen_document(Document(id="d", text=f"<p>{SWEDISH}</p><p>Mer.</p>"), max_chars=10_000) is None


# --- the ingest stage -----------------------------------------------------------------------------------


def test_ingest_jsonl_with_bad_documents_keeps_the_good_ones(tmp_path: Path) -> None:
    big = "Ord och mening. " * 1_300_000  # about 20 MB
    rows: list[object] = [
        {"id": "svar", "text": ANSWER},
        {"id": "tom", "text": "   "},
        {"id": "stor", "text": big},
        {"id": "engelska", "text": ENGLISH},
        {"id": "soppa", "text": "<div><span><b></b></span><script>" + "x();" * 200 + "</script>.</div>"},
        "{broken",
        {"id": "svar", "text": SWEDISH},
        {"id": "ok", "text": SWEDISH},
    ]
    source = _write_jsonl(tmp_path / "in.jsonl", rows)
    cfg = IngestConfig(source="jsonl", input=source, output=tmp_path / "docs.jsonl", rejects=tmp_path / "rej.jsonl")
    result = ingest(cfg)
    assert (result.documents, result.rejects) == (2, 6)
    docs = list(read_documents(cfg.output))
    assert [d.id for d in docs] == ["svar", "ok"]
    answer = docs[0].metadata["answer"]
    assert answer["questions"][0]["id"] == "2030/31:99" and answer["asker"] == "Anna Exempel"
    assert answer["minister"] == "Bo Minister" and docs[0].date == "2031-03-03"
    reasons = {r["id"]: r["reason"] for r in map(json.loads, cfg.rejects.read_text(encoding="utf-8").splitlines())}
    assert reasons["tom"].startswith("empty document")
    assert reasons["stor"].startswith(f"document has {len(big):,} characters; the limit is 2,000,000")
    assert reasons["engelska"].startswith("does not look like Swedish")
    assert reasons["soppa"].startswith("HTML markup soup")
    assert reasons["in.jsonl:6"].startswith("line 6: not valid JSON")
    assert reasons["svar"] == "duplicate id: an earlier document has the same id"


def test_ingest_folder(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "svar.txt").write_text("[bookmark: Start]" + ANSWER, encoding="utf-8")
    (folder / "tom.md").write_text("\n\n", encoding="utf-8")
    _make_docx(folder / "word.docx")
    cfg = IngestConfig(source="folder", input=folder, output=tmp_path / "d.jsonl.gz", rejects=tmp_path / "r.jsonl")
    result = ingest(cfg)
    assert (result.documents, result.rejects) == (2, 1)
    docs = {d.id: d for d in read_documents(cfg.output) if isinstance(d, Document)}
    assert docs["svar.txt"].metadata["answer"]["party"] == "X"
    assert json.loads(cfg.rejects.read_text())["source"] == str(folder / "tom.md")


def test_ingest_needs_an_input_for_file_sources(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"ingest\.input is required"):
        ingest(IngestConfig(source="folder", input=None, output=tmp_path / "d.jsonl"))
