"""Pseudo-labels: excluded documents never come back, the confidence rule holds exactly, the file is a training
source, and bad input is named (a missing file) or listed in the rejects (a document without text).

Real parts throughout: a TF-IDF teacher trained here on constructed sentences, the real readers, segmenter and
labelling path, a real (sqlite) MLflow store for the stage run. Every document and sentence is constructed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from pipeline.config import (
    ConfigError,
    LabelConfig,
    PipelineConfig,
    PseudoLabelConfig,
    SegmentConfig,
    TrainingSource,
    check_inputs,
    load_config,
)
from pipeline.label import model_from_folder
from pipeline.labelled_data import read_training_data, validate_files, write_labelled
from pipeline.models.tfidf import TfidfModel
from pipeline.pseudo_label import ExcludeFileError, balanced_cap, pseudo_label
from pipeline.run import EXIT_OK, EXIT_SOME_REJECTED, run_stages
from pipeline.schema import COMMITMENT_LABELS, STRATEGY_LABELS
from tests.labelled_examples import constructed_sentences, make_documents, write_jsonl

REPO = Path(__file__).resolve().parents[1]
GOLD_FIELDS = ("id", "doc_id", "sentence_index", "category", "year", "text", "strategy", "commitment")


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny TF-IDF teacher fitted on the constructed labelled sentences."""
    folder = tmp_path_factory.mktemp("teacher") / "model"
    TfidfModel(min_df=1, tune_thresholds=False).fit(constructed_sentences()).save(folder)
    return folder


def write_corpus(path: Path, n: int = 12, extra: list[dict] | None = None) -> Path:
    """Constructed answers as a documents JSONL with the corpus's `category` and `year` fields."""
    records = [
        {"id": d.id, "title": d.title, "text": d.text, "category": "svar", "year": 2021} for d in make_documents(n)
    ]
    return write_jsonl(path, records + (extra or []))


def labelled_file(path: Path, doc_ids: list[str]) -> Path:
    """A labelled file holding one constructed sentence of each document (what an exclude file is)."""
    lines = [
        {
            "id": f"{d}#0",
            "doc_id": d,
            "sentence_index": 0,
            "text": "Tack för frågan.",
            "strategy": [],
            "commitment": "none",
        }
        for d in doc_ids
    ]
    return write_jsonl(path, lines)


def run(tmp_path: Path, teacher_dir: Path, extra_exclude: tuple[Path, ...] = (), **changes: object):
    values: dict[str, object] = {"corpus": [tmp_path / "corpus.jsonl"], "output": tmp_path / "out" / "pseudo.jsonl"}
    values.update(changes)
    cfg = PseudoLabelConfig(**values)
    model, info = model_from_folder(str(teacher_dir))
    result = pseudo_label(cfg, model, info, SegmentConfig(), LabelConfig(), extra_exclude=extra_exclude)
    lines = [json.loads(line) for line in cfg.output.read_text(encoding="utf-8").splitlines()]
    return result, lines


def rule_holds(line: dict, m: float) -> bool:
    """The confidence rule, written out from the line's own probabilities and labels."""
    commitment = [line[f"p_{label}"] for label in COMMITMENT_LABELS]
    if max(commitment) < m or COMMITMENT_LABELS[int(np.argmax(commitment))] != line["commitment"]:
        return False
    for label in STRATEGY_LABELS:
        p = line[f"p_{label}"]
        if (label in line["strategy"] and p < m) or (label not in line["strategy"] and p > 1 - m):
            return False
    return True


def test_excluded_documents_never_come_back_and_are_counted(teacher_dir: Path, tmp_path: Path) -> None:
    write_corpus(tmp_path / "corpus.jsonl", 12)
    train = labelled_file(tmp_path / "train.jsonl", ["svar-0000", "svar-0001"])
    silver = labelled_file(tmp_path / "silver.jsonl", ["svar-0001", "svar-0002", "not-in-corpus"])
    dev = labelled_file(tmp_path / "dev.jsonl", ["svar-0003"])
    result, lines = run(
        tmp_path, teacher_dir, (dev,), exclude=[train, silver], min_confidence=0.0, distinct_texts=False
    )

    docs = {line["doc_id"] for line in lines}
    assert docs == {f"svar-{i:04d}" for i in range(4, 12)}
    assert (result.documents_read, result.documents_excluded, result.documents_labelled) == (12, 4, 8)
    assert result.documents_rejected == 0 and result.sentences_kept == result.sentences_seen == len(lines)
    summary = json.loads(result.summary.read_text(encoding="utf-8"))
    assert summary["documents"] == {"read": 12, "excluded": 4, "labelled": 8, "rejected": 0}
    assert summary["exclude"] == [
        {"path": str(train), "documents": 2},
        {"path": str(silver), "documents": 3},
        {"path": str(dev), "documents": 1},
    ]
    assert summary["teacher"]["uri"] == str(teacher_dir) and summary["min_confidence"] == 0.0
    assert sum(summary["kept_per_label"]["commitment"].values()) == len(lines)

    # the format of the gold files, in document order, plus where the labels came from
    first = lines[0]
    assert list(first)[: len(GOLD_FIELDS)] == list(GOLD_FIELDS)
    assert first["id"] == f"{first['doc_id']}#{first['sentence_index']}"
    assert (first["category"], first["year"]) == ("svar", 2021)
    assert {(x["annotation"], x["source"], x["teacher"]) for x in lines} == {("pseudo", "pseudo", str(teacher_dir))}
    order = [(x["doc_id"], x["sentence_index"]) for x in lines]
    assert order == sorted(order)

    # by default a text that recurs (a stock phrase on many pages) is kept once, where it first occurs
    result, distinct = run(tmp_path, teacher_dir, (dev,), exclude=[train, silver], min_confidence=0.0)
    first = {}
    for line in lines:
        first.setdefault(line["text"], line["id"])
    assert [x["id"] for x in distinct] == [i for i in (x["id"] for x in lines) if i in set(first.values())]
    assert result.sentences_repeated == len(lines) - len(distinct) > 0


def test_kept_sentences_are_exactly_those_sure_on_both_heads(teacher_dir: Path, tmp_path: Path) -> None:
    write_corpus(tmp_path / "corpus.jsonl", 12)
    _, every = run(tmp_path, teacher_dir, min_confidence=0.0, output=tmp_path / "all.jsonl", distinct_texts=False)
    confidences = sorted(line["confidence"] for line in every)
    m = confidences[len(confidences) // 2]  # a threshold some sentences pass and some do not
    assert 0.5 < m < 1 and confidences[0] < m
    for line in every:
        sure_strategy = [line[f"p_{s}"] if s in line["strategy"] else 1 - line[f"p_{s}"] for s in STRATEGY_LABELS]
        assert line["confidence"] == pytest.approx(min(max(line[f"p_{c}"] for c in COMMITMENT_LABELS), *sure_strategy))

    result, kept = run(tmp_path, teacher_dir, min_confidence=m, distinct_texts=False)
    expected = [line["id"] for line in every if rule_holds(line, m)]
    assert [line["id"] for line in kept] == expected
    assert 0 < len(kept) < len(every) and result.sentences_confident == len(kept)
    assert all(line["confidence"] >= m for line in kept)
    # a threshold of 1 keeps only sentences the teacher is certain of: none here
    assert run(tmp_path, teacher_dir, min_confidence=1.0)[1] == []


def test_pseudo_labels_are_a_weighted_training_source(teacher_dir: Path, tmp_path: Path) -> None:
    write_corpus(tmp_path / "corpus.jsonl", 8)
    _, lines = run(tmp_path, teacher_dir, min_confidence=0.0)
    pseudo = tmp_path / "out" / "pseudo.jsonl"
    gold = write_labelled(constructed_sentences(), tmp_path / "gold.jsonl")
    assert validate_files([gold, pseudo]) == []

    train, _ = read_training_data([gold, TrainingSource(path=pseudo, where={"annotation": "pseudo"}, weight=0.5)])
    weights = {s.id: s.weight for s in train}
    assert len(train) == len(constructed_sentences()) + len(lines)
    assert {weights[line["id"]] for line in lines} == {0.5}
    assert {weights[s.id] for s in constructed_sentences()} == {None}
    by_id = {s.id: s for s in train}
    assert all(by_id[x["id"]].strategy == x["strategy"] and by_id[x["id"]].commitment == x["commitment"] for x in lines)


def test_max_sentences_takes_commitment_types_in_turn(teacher_dir: Path, tmp_path: Path) -> None:
    commitments = ["none"] * 10 + ["funding"] * 2 + ["support"] * 5
    picked = balanced_cap(commitments, 7, seed=3)
    counts = {c: sum(commitments[i] == c for i in picked) for c in set(commitments)}
    # turns in COMMITMENT_LABELS order: funding, support, none; funding, support, none; support
    assert counts == {"funding": 2, "support": 3, "none": 2} and picked == sorted(picked)
    assert balanced_cap(commitments, 7, seed=3) == picked  # seeded
    assert sorted(balanced_cap(commitments, 100, seed=3)) == list(range(17))

    write_corpus(tmp_path / "corpus.jsonl", 12)
    _, every = run(tmp_path, teacher_dir, min_confidence=0.0, distinct_texts=False, output=tmp_path / "all.jsonl")
    result, lines = run(tmp_path, teacher_dir, min_confidence=0.0, max_sentences=4, distinct_texts=False)
    assert len(lines) == 4 == result.sentences_kept < result.sentences_confident == len(every)
    assert len({line["commitment"] for line in lines}) == min(4, len({line["commitment"] for line in every}))


def test_bad_input_is_named_or_listed_never_lost(teacher_dir: Path, tmp_path: Path) -> None:
    corpus = write_corpus(
        tmp_path / "corpus.jsonl", 3, extra=[{"id": "utan-text", "title": "x"}, {"id": "tom", "text": None}]
    )
    result, lines = run(tmp_path, teacher_dir, min_confidence=0.0)
    rejects = [json.loads(x) for x in result.rejects.read_text(encoding="utf-8").splitlines()]
    assert {(r["id"], r["reason"], r["source"]) for r in rejects} == {
        ("utan-text", "line 4: missing field 'text'", str(corpus)),
        ("tom", "line 5: field 'text' is null", str(corpus)),
    }
    assert (result.documents_read, result.documents_labelled, result.documents_rejected) == (5, 3, 2)
    assert {line["doc_id"] for line in lines} == {"svar-0000", "svar-0001", "svar-0002"}

    missing = tmp_path / "absent.jsonl"
    with pytest.raises(FileNotFoundError, match=rf"pseudo_label.corpus: {missing}: no such file"):
        run(tmp_path, teacher_dir, corpus=[missing])
    with pytest.raises(FileNotFoundError, match=rf"pseudo_label.exclude: {missing}: file not found"):
        run(tmp_path, teacher_dir, exclude=[missing])
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"doc_id": "a"}\n{"id": "b"}\n', encoding="utf-8")
    with pytest.raises(ExcludeFileError, match=rf"{broken}:2: no 'doc_id'"):
        run(tmp_path, teacher_dir, exclude=[broken])

    config = tmp_path / "c.yaml"
    config.write_text(
        f"pseudo_label:\n  corpus: [{missing}]\n  teacher: {teacher_dir}\ndata:\n  dev: {corpus}\n", encoding="utf-8"
    )
    with pytest.raises(ConfigError, match=rf"pseudo_label\.corpus\[0\]: file not found: {missing}"):
        check_inputs(load_config(config), ["pseudo_label"])


@pytest.mark.slow  # a real MLflow store and a training stage: about 15 s alone, a minute on a busy machine
def test_a_run_trains_the_teacher_then_pseudo_labels_and_logs_the_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    corpus = write_corpus(tmp_path / "corpus.jsonl", 10, extra=[{"id": "tom", "text": None}])
    train = REPO / "data/sample/labelled/train.jsonl"
    dev = labelled_file(tmp_path / "dev.jsonl", ["svar-0000"])
    settings = {
        "name": "pseudo",
        "stages": ["train", "pseudo_label"],
        "data": {"train": [str(train)], "dev": str(dev)},
        "train": {
            "model": {"kind": "tfidf", "threshold_folds": 3},
            "baselines": [],
            "output_dir": str(tmp_path / "models"),
            "register_model": False,
        },
        "pseudo_label": {
            "corpus": [str(corpus)],
            "teacher": str(tmp_path / "models" / "model"),
            "exclude": [str(train)],
            "min_confidence": 0.5,
            "output": str(tmp_path / "pseudo.jsonl.gz"),
        },
        "tracking": {
            "uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "artifact_location": str(tmp_path / "artifacts"),
            "log_system_metrics": False,
        },
    }
    config = PipelineConfig.model_validate(settings)
    check_inputs(config, config.stages)  # the teacher is the train stage's output: not refused before the run
    outcome = run_stages(config, config.stages)
    assert outcome.exit_code == EXIT_SOME_REJECTED, [s.message for s in outcome.stages]  # the document "tom"

    summary = json.loads((tmp_path / "pseudo.summary.json").read_text(encoding="utf-8"))
    assert summary["documents"] == {"read": 11, "excluded": 1, "labelled": 9, "rejected": 1}  # dev left out
    sentences, _ = read_training_data([TrainingSource(path=tmp_path / "pseudo.jsonl.gz", weight=0.5)])
    assert len(sentences) == summary["sentences"]["kept"] > 0
    client = MlflowClient(tracking_uri=settings["tracking"]["uri"])
    experiment = client.get_experiment_by_name("pseudo")
    stage = next(
        r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("stage") == "pseudo_label"
    )
    assert stage.data.metrics["sentences_kept"] == summary["sentences"]["kept"]
    assert stage.data.metrics["documents_excluded"] == 1
    assert stage.data.tags["pseudo_label.teacher"] == str(tmp_path / "models" / "model")
    assert {f.path for f in client.list_artifacts(stage.info.run_id, "pseudo_label")} == {
        "pseudo_label/pseudo.summary.json",
        "pseudo_label/pseudo.rejects.jsonl",
    }

    settings["pseudo_label"]["teacher"] = str(tmp_path / "no-model")
    outcome = run_stages(PipelineConfig.model_validate(settings), ["pseudo_label"])
    assert outcome.exit_code != EXIT_OK and "pseudo_label.teacher" in outcome.stages[-1].message


def test_shipped_config_excludes_every_labelled_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_SHARED_DIR", "/shared")
    config = load_config(REPO / "configs/pseudo-labels.yaml", ["pseudo_label.teacher=models:/t@champion"])
    gold = Path("/shared/gold")
    assert set(config.pseudo_label.exclude) == {gold / "train.jsonl", gold / "silver.jsonl", gold / "dev.jsonl"}
    assert config.stages == ["train", "pseudo_label"] and config.pseudo_label.teacher == "models:/t@champion"
