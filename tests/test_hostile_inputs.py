"""Hostile input through the CLI, as a user would hand it over: each file has one expected outcome.

Every file is written here (constructed text, no corpus). `label` and `ingest` run as subprocesses on the
same folder; each document must end up labelled or in the rejects file with the expected reason, and both
commands must give a screened document the same reason. A tampered model folder is in tests/test_security.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from pipeline.models.tfidf import TfidfModel
from tests.labelled_examples import ENGLISH, SWEDISH, constructed_sentences

ROOT = Path(__file__).resolve().parents[1]
NO_PUNCTUATION = "regeringen och kommunerna ska arbeta för att förebygga " * 1200  # 66,000 characters

# file or JSONL id -> expected outcome of `label`: "labelled", or (severity, start of the reason)
EXPECTED: dict[str, object] = {
    "empty.txt": ("rejected", "empty document"),
    "whitespace.txt": ("rejected", "empty document"),
    "binary.txt": ("rejected", "binary file (contains NUL bytes)"),
    "nul.txt": ("rejected", "binary file (contains NUL bytes)"),
    "latin1.txt": ("rejected", "not valid UTF-8: byte 0xc4 at offset 0"),
    "utf16-bom.txt": "labelled",
    "utf16-no-bom.txt": "labelled",
    "utf8-bom.md": "labelled",
    "huge.txt": ("warning", "over the length limit"),  # 20+ MB: label reads the first label.max_chars
    "soup.html": "labelled",  # scripts and styles dropped, the paragraph kept
    "english.txt": ("rejected", "does not look like Swedish"),
    "corrupt.docx": ("rejected", "not a readable Word .docx file"),
    "no-punctuation.txt": ("rejected", "no sentence boundaries"),
    "good": "labelled",
    "docs.jsonl:2": ("rejected", "line 2: not valid JSON: Expecting ',' delimiter at column"),
    "null": ("rejected", "line 3: field 'text' is null"),
    "soup-in-json": ("rejected", "HTML markup soup"),
    "docs.jsonl": ("note", "2 blank line(s) skipped (line 5, 7)"),
}


def hostile_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "empty.txt").write_bytes(b"")
    (folder / "whitespace.txt").write_text(" \n\t\u00a0\n  ", encoding="utf-8")
    (folder / "binary.txt").write_bytes(bytes(range(256)) * 64)
    (folder / "nul.txt").write_bytes(SWEDISH.encode() + b"\x00\x00" + SWEDISH.encode())
    (folder / "latin1.txt").write_bytes(("Ärende: " + SWEDISH).encode("latin-1"))
    (folder / "utf16-bom.txt").write_bytes(SWEDISH.encode("utf-16"))
    (folder / "utf16-no-bom.txt").write_bytes(SWEDISH.encode("utf-16-le"))
    (folder / "utf8-bom.md").write_bytes(("# Svar\n\n" + SWEDISH).encode("utf-8-sig"))
    with (folder / "huge.txt").open("w", encoding="utf-8") as handle:
        for _ in range(21 * 1024 * 1024 // len(SWEDISH.encode()) + 1):
            handle.write(SWEDISH + "\n\n")
    script = "<script>var x = '" + "a" * 5000 + "'; document.write(x);</script>"
    (folder / "soup.html").write_text(
        f"<html><head><style>p {{color: red}}</style>{script}</head><body><div><p>{SWEDISH}</p>{script}"
        "<span><b>ej stängd</div></body>",
        encoding="utf-8",
    )
    (folder / "english.txt").write_text(ENGLISH, encoding="utf-8")
    (folder / "corrupt.docx").write_bytes(b"PK\x03\x04 this is not really a zip archive")
    (folder / "no-punctuation.txt").write_text(NO_PUNCTUATION, encoding="utf-8")
    soup = "<div>" + "<span class='x'></span>" * 400 + "<p>Hej.</p></div>"
    lines = [
        json.dumps({"id": "good", "text": SWEDISH}, ensure_ascii=False),
        '{"id": "broken" "text": "saknar komma"}',
        json.dumps({"id": "null", "text": None}),
        json.dumps({"id": "good", "text": SWEDISH + " Igen."}, ensure_ascii=False),  # duplicate id
        "",
        json.dumps({"id": "soup-in-json", "text": soup}),
        "   ",
    ]
    (folder / "docs.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def cli(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=900
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    hostile_folder(root / "inbox")
    TfidfModel(min_df=1, tune_thresholds=False).fit(constructed_sentences()).save(root / "model")
    (root / "config.yaml").write_text(
        "ingest:\n  source: folder\n  input: inbox\n  output: out/documents.jsonl\n"
        "  rejects: out/ingest_rejects.jsonl\n"
        f"label:\n  model: {root / 'model'}\n  input: inbox\n  output: out/labelled.jsonl\n"
        f"tracking:\n  uri: sqlite:///{root / 'mlflow.db'}\n  artifact_location: {root / 'artifacts'}\n",
        encoding="utf-8",
    )
    return root


def _rejects(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.slow
def test_label_gives_every_hostile_document_its_expected_outcome(workdir: Path) -> None:
    result = cli(workdir, "label", "-c", "config.yaml")
    assert result.returncode == 3, result.stderr[-3000:]  # documents were rejected
    assert "Traceback" not in result.stderr
    rows = pd.read_json(workdir / "out/labelled.jsonl", lines=True)
    rejects = _rejects(workdir / "out/labelled.rejects.jsonl")
    labelled = set(rows.doc_id)
    for doc_id, expected in EXPECTED.items():
        # (the duplicate "good" line is checked below)
        listed = [r for r in rejects if r["id"] == doc_id and not r["reason"].startswith("duplicate id")]
        if expected == "labelled":
            assert doc_id in labelled and not listed, (doc_id, listed)
            continue
        severity, reason = expected  # type: ignore[misc]
        assert len(listed) == 1 and listed[0]["severity"] == severity, (doc_id, listed)
        assert listed[0]["reason"].startswith(reason), (doc_id, listed[0]["reason"])
        assert (doc_id in labelled) == (severity == "warning"), doc_id
    duplicate = [r for r in rejects if r["id"] == "good" and r["reason"].startswith("duplicate id")]
    assert len(duplicate) == 1  # the second "good" line: listed, and its text is not in the output
    assert not rows[rows.doc_id == "good"].text.str.contains("Igen").any()
    assert not rows.text.str.contains("script|document.write|color", regex=True).any()
    # nothing lost: every file and every non-blank JSONL line is labelled or listed as rejected
    files = {p.name for p in (workdir / "inbox").iterdir() if p.suffix != ".jsonl"}
    outcomes = labelled | {r["id"] for r in rejects}
    assert files <= outcomes and {"good", "docs.jsonl:2", "null", "soup-in-json"} <= outcomes
    assert len([r for r in rejects if r["severity"] == "rejected"]) == sum(
        1 for e in EXPECTED.values() if isinstance(e, tuple) and e[0] == "rejected"
    ) + len(duplicate)

    # ingest screens the same documents with the same reasons (it rejects an over-long one instead of
    # cutting it, and does not segment, so text without punctuation passes it)
    ingested = cli(workdir, "ingest", "-c", "config.yaml")
    assert ingested.returncode == 3, ingested.stderr[-3000:]
    by_id = {r["id"]: r["reason"] for r in _rejects(workdir / "out/ingest_rejects.jsonl")}
    for doc_id, expected in EXPECTED.items():
        if isinstance(expected, tuple) and expected[0] == "rejected" and doc_id != "no-punctuation.txt":
            assert by_id[doc_id].startswith(expected[1]), (doc_id, by_id.get(doc_id))
    assert by_id["huge.txt"].startswith("document has") and "ingest.max_chars" in by_id["huge.txt"]
    kept = {json.loads(line)["id"] for line in (workdir / "out/documents.jsonl").read_text().splitlines()}
    assert kept == {"utf16-bom.txt", "utf16-no-bom.txt", "utf8-bom.md", "soup.html", "good", "no-punctuation.txt"}


@pytest.mark.slow
def test_a_rerun_with_other_arguments_is_refused_in_one_line_unless_overwrite(workdir: Path) -> None:
    out = workdir / "out/clean.jsonl"
    docs = workdir / "clean.jsonl"
    docs.write_text(json.dumps({"id": "a", "text": SWEDISH}, ensure_ascii=False) + "\n", encoding="utf-8")
    first = cli(workdir, "label", "-c", "config.yaml", "--input", str(docs), "--output", str(out))
    assert first.returncode == 0, first.stderr[-3000:]  # nothing wrong: exit 0
    again = cli(
        workdir, "label", "-c", "config.yaml", "--input", str(docs), "--output", str(out), "-s", "label.max_chars=500"
    )
    assert again.returncode == 2 and "Traceback" not in again.stderr
    [line] = [line for line in again.stderr.splitlines() if line.startswith("error:")]
    assert "already written by a run with other arguments (differs in label.max_chars)" in line
    forced = cli(
        workdir, "label", "-c", "config.yaml", "--input", str(docs), "--output", str(out), "-s", "label.max_chars=500",
        "--overwrite",
    )  # fmt: skip
    assert forced.returncode == 0, forced.stderr[-3000:]


MANY = 600  # documents in two-document chunks: long enough to interrupt after the first chunk


@pytest.mark.slow
def test_ctrl_c_says_what_was_kept_and_a_rerun_resumes(workdir: Path) -> None:
    docs = workdir / "many.jsonl"
    docs.write_text(
        "".join(json.dumps({"id": f"d{i}", "text": SWEDISH}, ensure_ascii=False) + "\n" for i in range(MANY)),
        encoding="utf-8",
    )
    out = workdir / "out/many.jsonl"
    args = ["label", "-c", "config.yaml", "--input", str(docs), "--output", str(out), "-s", "label.chunk_documents=2"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = str(ROOT)
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args],
        cwd=workdir,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        # a runner started in the background (`cmd &` in a script) ignores SIGINT, and children inherit that
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    partial = out.with_name(out.name + ".partial")
    deadline = time.monotonic() + 300
    while not list(partial.glob("chunk-*")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    [line] = [line for line in stderr.splitlines() if line.startswith("interrupted")]
    assert str(partial) in line and "rerun the same command" in line
    resumed = cli(workdir, *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert len(out.read_text().splitlines()) == MANY * 4  # four sentences per document
