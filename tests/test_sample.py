"""The bundled constructed sample: valid, split by document, every label covered, counts as in the README."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path

import pytest

from pipeline.sample import SAMPLE_FILES, sample_dir, write_sample
from pipeline.schema import COMMITMENT_LABELS, STRATEGY_LABELS, Document, LabelledSentence

# Minimum examples per label, per split (the quick start trains on train and scores on dev).
MIN_COMMITMENT = {"train": 6, "dev": 3}
MIN_STRATEGY = {"train": 10, "dev": 4}


def _jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def splits() -> dict[str, list[dict]]:
    root = sample_dir()
    return {split: _jsonl(root / "labelled" / f"{split}.jsonl") for split in ("train", "dev")}


def label_counts_table(splits: dict[str, list[dict]]) -> str:
    """The Markdown table of label counts that data/sample/README.md must carry."""
    lines = ["| label | train | dev |", "|---|---:|---:|"]
    lines.append(f"| sentences | {len(splits['train'])} | {len(splits['dev'])} |")
    docs = {k: len({r["doc_id"] for r in v}) for k, v in splits.items()}
    lines.append(f"| documents | {docs['train']} | {docs['dev']} |")
    for label in STRATEGY_LABELS:
        n = {k: sum(label in r["strategy"] for r in v) for k, v in splits.items()}
        lines.append(f"| strategy `{label}` | {n['train']} | {n['dev']} |")
    n = {k: sum(not r["strategy"] for r in v) for k, v in splits.items()}
    lines.append(f"| strategy empty | {n['train']} | {n['dev']} |")
    for label in COMMITMENT_LABELS:
        n = {k: sum(r["commitment"] == label for r in v) for k, v in splits.items()}
        lines.append(f"| commitment `{label}` | {n['train']} | {n['dev']} |")
    return "\n".join(lines)


def test_every_labelled_line_validates_and_is_marked_constructed(splits):
    for split, rows in splits.items():
        assert rows, f"{split}.jsonl is empty"
        for row in rows:
            sentence = LabelledSentence.model_validate(row)
            assert row.get("constructed") is True, f"{split}: {sentence.id} is not marked constructed"
            assert sentence.id == f"{sentence.doc_id}#{sentence.sentence_index}"
            assert sentence.text.strip() == sentence.text and sentence.text
            assert isinstance(row["year"], int) and 2015 <= row["year"] <= 2025
            assert row["category"]


def test_ids_unique_and_sentence_indices_run_in_order(splits):
    ids = [r["id"] for rows in splits.values() for r in rows]
    assert len(ids) == len(set(ids)), [i for i, n in Counter(ids).items() if n > 1]
    for rows in splits.values():
        by_doc: dict[str, list[int]] = {}
        for r in rows:
            by_doc.setdefault(r["doc_id"], []).append(r["sentence_index"])
        for doc_id, indices in by_doc.items():
            assert indices == list(range(len(indices))), doc_id


def test_train_and_dev_share_no_document(splits):
    train_docs = {r["doc_id"] for r in splits["train"]}
    dev_docs = {r["doc_id"] for r in splits["dev"]}
    assert not train_docs & dev_docs


@pytest.mark.parametrize("split", ["train", "dev"])
def test_every_label_is_covered(splits, split):
    rows = splits[split]
    commitments = Counter(r["commitment"] for r in rows)
    strategies = Counter(label for r in rows for label in r["strategy"])
    for label in COMMITMENT_LABELS:
        assert commitments[label] >= MIN_COMMITMENT[split], (split, label, commitments[label])
    for label in STRATEGY_LABELS:
        assert strategies[label] >= MIN_STRATEGY[split], (split, label, strategies[label])
    # Sentences without a dimension are the natural majority; the sample must teach that too.
    assert sum(not r["strategy"] for r in rows) >= MIN_STRATEGY[split]


def test_readme_states_the_label_counts(splits):
    expected = label_counts_table(splits)
    readme = (sample_dir() / "README.md").read_text(encoding="utf-8")
    assert expected in readme, f"data/sample/README.md must contain this table:\n{expected}"


def test_answers_validate_as_documents_and_match_the_text_files():
    root = sample_dir()
    answers = [Document.model_validate(row) for row in _jsonl(root / "answers.jsonl")]
    assert len(answers) == 5
    assert len({a.id for a in answers}) == len(answers)
    for answer in answers:
        assert answer.text.strip()
        assert answer.metadata["constructed"] is True
        assert answer.metadata["doktyp"] == "frs"
        assert answer.metadata["minister"]
        on_disk = (root / answer.metadata["source_file"]).read_text(encoding="utf-8")
        assert on_disk == answer.text
        first_line = answer.text.splitlines()[0]
        assert re.match(r"Svar på fråga \d{4}/\d{2}:\d+ av .+ \([A-ZÅÄÖ]+\) ", first_line), first_line
        assert re.search(r"^Stockholm den \d{1,2} \w+ \d{4}$", answer.text, flags=re.MULTILINE)
        assert answer.text.rstrip().splitlines()[-1] == answer.metadata["minister"]
    assert sum(" och på fråga " in a.text.splitlines()[0] for a in answers) == 1
    assert sorted(p.name for p in (root / "answers").glob("*.txt")) == sorted(
        Path(a.metadata["source_file"]).name for a in answers
    )


def test_answer_sentences_are_all_labelled():
    """Every sentence of every answer appears, in order, among the labelled sentences of that answer."""
    root = sample_dir()
    labelled = _jsonl(root / "labelled" / "train.jsonl") + _jsonl(root / "labelled" / "dev.jsonl")
    for answer in _jsonl(root / "answers.jsonl"):
        flat = " ".join(answer["text"].replace("• ", "").split())
        texts = [r["text"] for r in labelled if r["doc_id"] == answer["id"]]
        assert texts, answer["id"]
        assert " ".join(texts) == flat, answer["id"]


def test_corpus_documents_validate():
    rows = _jsonl(sample_dir() / "corpus.jsonl")
    assert 60 <= len(rows) <= 100
    docs = [Document.model_validate(row) for row in rows]
    assert len({d.id for d in docs}) == len(docs)
    assert all(d.text.strip() and d.metadata.get("constructed") is True for d in docs)


def test_write_sample_copies_every_file(tmp_path):
    dest = write_sample(tmp_path / "sample")
    for name in SAMPLE_FILES:
        assert (dest / name).read_bytes() == (sample_dir() / name).read_bytes(), name
    assert len(list((dest / "answers").glob("*.txt"))) == 5


def test_write_sample_refuses_a_file_as_destination(tmp_path):
    target = tmp_path / "not-a-folder"
    target.write_text("x", encoding="utf-8")
    with pytest.raises(NotADirectoryError, match="not-a-folder"):
        write_sample(target)


def test_no_sentence_is_taken_from_the_shared_material(splits):
    """Guard against copying: no sample sentence may occur in the shared gold sentences or the seed answer."""
    shared = Path(os.environ.get("PIPELINE_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
    if not (shared / "gold" / "train.jsonl").is_file():
        pytest.skip("shared material not available (set PIPELINE_SHARED_DIR)")
    gold = set()
    for name in ("train.jsonl", "dev.jsonl"):
        gold |= {row["text"].strip() for row in _jsonl(shared / "gold" / name)}
    seed = " ".join(p.read_text(encoding="utf-8") for p in (shared / "seed").glob("*.txt"))
    seed = " ".join(seed.split())
    ours = [r["text"] for rows in splits.values() for r in rows if len(r["text"]) > 40]
    copied = [t for t in ours if t in gold or t in seed]
    assert not copied, copied


def test_the_training_reader_accepts_the_sample():
    """The same files pass the project's own labelled-data reader (duplicates, split leakage, bad lines)."""
    from pipeline.labelled_data import read_training_data

    root = sample_dir()
    train, dev = read_training_data([root / "labelled" / "train.jsonl"], root / "labelled" / "dev.jsonl")
    assert len(train) == len(_jsonl(root / "labelled" / "train.jsonl"))
    assert dev is not None and len(dev) == len(_jsonl(root / "labelled" / "dev.jsonl"))
