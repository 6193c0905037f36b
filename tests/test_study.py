"""`ct-pipeline study` end to end on the bundled constructed sample: variants trained, scored, logged, tabled."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipeline.config import ConfigError, load_config
from pipeline.sample import write_sample

ROOT = Path(__file__).resolve().parents[1]

STUDY = """
name: sample-study
stages: [train]
data:
  train: [data/sample/labelled/train.jsonl]
  dev: data/sample/labelled/dev.jsonl
train:
  model: {kind: tfidf, threshold_folds: 3}
evaluate: {bootstrap_samples: 200}
study:
  reference: tfidf
  table: runs/study.md
  variants:
    - {name: majority, description: "most frequent labels", set: ["train.model={kind: majority}"]}
    - {name: tfidf, description: "TF-IDF + LR"}
    - {name: tfidf-half, description: "half the documents",
       set: ["data.train=[{path: data/sample/labelled/train.jsonl, fraction: 0.5}]"]}
"""


def test_study_trains_scores_and_logs_every_variant(tmp_path: Path) -> None:
    write_sample(tmp_path / "data" / "sample")
    (tmp_path / "study.yaml").write_text(STUDY, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"PYTHONPATH": str(ROOT)}

    def study(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipeline", "study", "-c", "study.yaml", *args],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip

    result = study()
    assert result.returncode == 0, result.stderr[-3000:]
    table = (tmp_path / "runs" / "study.md").read_text(encoding="utf-8")
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == ["tfidf", "majority", "tfidf-half"]  # reference first
    assert "+0.000 [+0.000, +0.000]" in rows[0]  # the reference against itself
    # the pick is made on gold training documents held out from every variant, never on dev
    assert "selection set:" in result.stderr and sum("★" in row for row in rows) == 1
    assert "★" not in rows[1]  # the majority baseline is not the pick
    assert "✗" in rows[1]  # the majority baseline is worse, with an interval below zero
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/runs/mlflow.db")
    experiment = client.get_experiment_by_name("study-study")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"majority", "tfidf", "tfidf-half"}
    half = runs["tfidf-half"].data
    assert half.metrics["train_sentences"] < runs["tfidf"].data.metrics["train_sentences"]
    assert 0 <= half.metrics["dev_commitment_macro_f1"] <= 1 and "paired.strategy_macro_f1.ci_low" in half.metrics
    assert 0 <= half.metrics["selection_strategy_macro_f1"] <= 1
    assert half.params["variant.overrides"].startswith("data.train=")

    # one variant again (with the reference): the table still holds every variant, from their latest runs
    again = study("--variant", "majority")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "study 1/2 tfidf" in again.stderr and "study 2/2 majority" in again.stderr
    new_rows = [line for line in (tmp_path / "runs" / "study.md").read_text(encoding="utf-8").splitlines()
                if line.startswith("| `")]  # fmt: skip
    assert [row.split("`")[1] for row in new_rows] == ["tfidf", "majority", "tfidf-half"]
    assert new_rows[2] == rows[2]  # not rerun: read back from its run
    assert len(client.search_runs([experiment.experiment_id], "attributes.run_name = 'majority'")) == 2
    # cross-validation over all gold training documents: a column of its own, and the pick is made there
    folds = study("--variant", "tfidf-half", "--set", "study.cv_folds=3")
    assert folds.returncode == 0, folds.stderr[-3000:]
    assert "cross-validation fold 3/3" in folds.stderr
    cv_rows = [line for line in (tmp_path / "runs" / "study.md").read_text(encoding="utf-8").splitlines()
               if line.startswith("| `")]  # fmt: skip
    with_cv = [row for row in cv_rows if row.split(" | ")[4] != "—"]
    assert [row.split("`")[1] for row in with_cv] == ["tfidf", "tfidf-half"]
    assert "★" in "".join(with_cv) and "★" not in cv_rows[1]
    latest_half = client.search_runs(
        [experiment.experiment_id], "attributes.run_name = 'tfidf-half'", order_by=["attributes.start_time DESC"]
    )[0]
    assert 0 <= latest_half.data.metrics["cv_strategy_macro_f1"] <= 1
    unknown = study("--variant", "nope")
    assert unknown.returncode == 2 and "unknown study variant(s) ['nope']" in unknown.stderr


def test_a_study_must_name_a_known_reference(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(STUDY.replace("reference: tfidf", "reference: nope"), encoding="utf-8")
    with pytest.raises(ConfigError, match="reference 'nope' is not one of the variants"):
        load_config(tmp_path / "s.yaml")


def test_no_variant_trains_on_the_selection_documents(tmp_path: Path) -> None:
    from pipeline.labelled_data import read_labelled
    from pipeline.study import fit_variant, selection_documents, variant_config

    write_sample(tmp_path / "data" / "sample")
    (tmp_path / "study.yaml").write_text(STUDY, encoding="utf-8")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        config = load_config(Path("study.yaml"))
        selection = selection_documents(config)
        held_out = frozenset(s.doc_id for s in selection)
        all_docs = {s.doc_id for s in read_labelled(config.data.train[0].path)}
        assert held_out and held_out < all_docs
        _, train, _ = fit_variant(variant_config(config, config.study.variants[2]), held_out)  # tfidf-half
        assert train and not held_out & {s.doc_id for s in train}
        with pytest.raises(ConfigError, match="1 fold cannot hold anything out"):
            load_config(Path("study.yaml"), ["study.cv_folds=1"])
        off = load_config(Path("study.yaml"), ["study.selection_fraction=0"])
        assert selection_documents(off) == []
    finally:
        os.chdir(cwd)
