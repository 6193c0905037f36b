"""Property: every reader takes any bytes or any Unicode without crashing, and gives one outcome per document.

A file is one document (a Document or a Reject); a JSONL file gives one outcome per non-blank line, plus at
most one `note` for its blank lines. Screening any Unicode text gives a verdict, never an exception.
"""

from __future__ import annotations

import codecs
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pipeline.io.documents import read_documents
from pipeline.io.rejects import Reject
from pipeline.schema import Document
from pipeline.screening import screen_document

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SUFFIXES = (".txt", ".md", ".html", ".docx")


def _read(name: str, data: bytes) -> list[Document | Reject]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        return list(read_documents(path))


@SETTINGS
@given(data=st.binary(max_size=4096), suffix=st.sampled_from(SUFFIXES))
def test_any_bytes_in_a_file_give_exactly_one_outcome(data: bytes, suffix: str) -> None:
    [outcome] = _read(f"doc{suffix}", data)
    assert isinstance(outcome, Document | Reject)
    if isinstance(outcome, Reject):
        assert outcome.reason and "\n" not in outcome.reason


@SETTINGS
@given(text=st.text(max_size=2000), suffix=st.sampled_from(SUFFIXES[:3]), encoding=st.sampled_from(["utf-8", "utf-16"]))
def test_any_unicode_in_a_text_file_gives_exactly_one_outcome(text: str, suffix: str, encoding: str) -> None:
    data = text.encode(encoding, "surrogatepass")
    [outcome] = _read(f"doc{suffix}", data)
    assert isinstance(outcome, Document | Reject)


@SETTINGS
@given(lines=st.lists(st.binary(max_size=200).map(lambda b: b.replace(b"\n", b"")), max_size=20))
def test_any_jsonl_lines_give_one_outcome_per_line_and_one_note_for_blank_ones(lines: list[bytes]) -> None:
    # a byte-order mark at the start decides the file's encoding (tested with the encodings elsewhere)
    assume(not lines or not lines[0].startswith((codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)))
    outcomes = _read("docs.jsonl", b"".join(line + b"\n" for line in lines))
    notes = [o for o in outcomes if isinstance(o, Reject) and o.severity == "note"]
    blank = [line for line in lines if not line.strip()]
    assert len(notes) == (1 if blank else 0)
    assert len(outcomes) - len(notes) == len(lines) - len(blank)


@SETTINGS
@given(text=st.text(max_size=3000))
def test_screening_any_text_gives_a_verdict(text: str) -> None:
    verdict = screen_document(Document(id="d", text=text), max_chars=2500)
    assert verdict is None or (isinstance(verdict, str) and verdict)
