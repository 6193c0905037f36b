"""The CLI end to end, as a user runs it: the quick start config (shrunk), every stage alone, the errors.

One `pipeline run` in a temporary folder trains real (tiny) models and logs to a real sqlite MLflow store;
the later tests reuse that folder to run single stages against what it left.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipeline.sample import write_sample

pytestmark = pytest.mark.slow  # every test runs the CLI in a fresh interpreter

ROOT = Path(__file__).resolve().parents[1]
MODEL_NAME = "ct-sentence-labeller-quickstart"
# The quick start as shipped, made to finish in well under a minute.
FAST = [
    "pretrain.max_steps=20",
    "pretrain.batch_size=16",
    "train.model.members.0.epochs=2",  # the BERT member of the ensemble
    "evaluate.bootstrap_samples=50",
]


def cli(workdir: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": ""}
    env.pop("MLFLOW_TRACKING_URI")
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def with_fast(*extra: str) -> list[str]:
    return [arg for item in (*FAST, *extra) for arg in ("--set", item)]


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's folder after `pipeline run --config configs/quickstart.yaml`."""
    workdir = tmp_path_factory.mktemp("quickstart")
    write_sample(workdir / "data" / "sample")
    shutil.copytree(ROOT / "configs", workdir / "configs")
    result = cli(workdir, "run", "--config", "configs/quickstart.yaml", *with_fast())
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir


def _client(workdir: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{workdir}/runs/mlflow.db")


@pytest.mark.slow
def test_quickstart_leaves_runs_model_and_labelled_file(quickstart: Path) -> None:
    client = _client(quickstart)
    experiment = client.get_experiment_by_name("quickstart")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    stages = {r.data.tags.get("stage") for r in runs}
    assert {"ingest", "segment", "pretrain", "train", "evaluate", "label"} <= stages
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].data.params["train.model.kind"] == "ensemble"
    evaluate = next(r for r in runs if r.data.tags.get("stage") == "evaluate")
    assert 0.0 <= evaluate.data.metrics["model.commitment_macro_f1"] <= 1.0
    assert "baseline-tfidf.strategy_macro_f1" in evaluate.data.metrics
    assert "commitment_macro_f1" not in evaluate.data.metrics  # no unprefixed copy posing as a model
    model_run = next(r for r in runs if r.data.tags.get("model") == "model")
    history = client.get_metric_history(model_run.info.run_id, "member0.dev_commitment_macro_f1")
    assert len(history) >= 2, "the BERT member's per-epoch curve is logged under the member's name"
    assert "dev_commitment_macro_f1" not in model_run.data.metrics
    # every metric of every run is logged once per step (no summary repeating a curve's last point at step 0)
    for run in runs:
        for key in run.data.metrics:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert len(steps) == len(set(steps)), (run.data.tags.get("mlflow.runName"), key, steps)

    version = client.get_model_version_by_alias(MODEL_NAME, "challenger")
    assert int(version.version) == 1

    labelled = pd.read_parquet(quickstart / "runs/quickstart/labelled_sentences.parquet")
    documents = [json.loads(line) for line in (quickstart / "runs/quickstart/documents.jsonl").open()]
    assert set(labelled["doc_id"]) == {d["id"] for d in documents}
    assert {"heading", "body", "dateline"} <= set(labelled["role"])
    assert labelled["p_none"].between(0, 1).all()
    assert (labelled["model_version"].astype(str) == "1").all()
    # every row points back into its document's own text (documents.jsonl), not a cleaned copy of it
    texts = {d["id"]: d["text"] for d in documents}
    for row in labelled.itertuples():
        passage = texts[row.doc_id][row.start : row.end]
        assert "".join(passage.split()).replace("\u00ad", "") == "".join(row.text.split()), (row.doc_id, row.index)
    assert (quickstart / "runs/quickstart/evaluation/comparison.md").is_file()
    label = next(r for r in runs if r.data.tags.get("stage") == "label")  # where the label stage's time went
    assert {"seconds_segment", "seconds_tokenise", "seconds_infer", "seconds_write"} <= set(label.data.metrics)
    assert label.data.metrics["sentences_per_second"] > 0


@pytest.mark.slow
def test_stages_run_alone_on_what_the_run_left(quickstart: Path) -> None:
    segment = cli(quickstart, "segment", "-c", "configs/quickstart.yaml", "--set", "segment.output=runs/s2.jsonl")
    assert segment.returncode == 0, segment.stderr[-2000:]
    assert (quickstart / "runs/s2.jsonl").read_text() == (quickstart / "runs/quickstart/sentences.jsonl").read_text()

    evaluate = cli(quickstart, "evaluate", "-c", "configs/quickstart.yaml", *with_fast())
    assert evaluate.returncode == 0, evaluate.stderr[-2000:]
    assert "Model comparison" in evaluate.stderr

    out = quickstart / "runs/relabelled.csv"
    label = cli(
        quickstart,
        "label",
        "-c",
        "configs/quickstart.yaml",
        "--model",
        f"models:/{MODEL_NAME}/1",
        "--input",
        "data/sample/answers",
        "--output",
        str(out),
    )
    assert label.returncode == 0, label.stderr[-2000:]
    assert re.search(r"label: [\d,]+ sentences in [\d.]+ s .*segment .*tokenise .*infer .*write", label.stderr)
    assert len(pd.read_csv(out)) == len(pd.read_parquet(quickstart / "runs/quickstart/labelled_sentences.parquet"))


@pytest.mark.slow
def test_label_reports_rejected_documents_in_exit_code(quickstart: Path) -> None:
    folder = quickstart / "incoming"
    folder.mkdir()
    (folder / "empty.txt").write_text("   \n")
    (folder / "ok.txt").write_text("Regeringen har gett Polismyndigheten ett nytt uppdrag. (Konstruerad mening.)\n")
    out = quickstart / "runs/incoming.jsonl"
    result = cli(quickstart, "label", "-c", "configs/quickstart.yaml", "--input", str(folder), "--output", str(out))
    assert result.returncode == 3, result.stderr[-2000:]
    rejects = [json.loads(line) for line in (quickstart / "runs/incoming.rejects.jsonl").open()]
    assert [r["id"] for r in rejects if r.get("severity", "rejected") == "rejected"] == ["empty.txt"]
    rows = [json.loads(line) for line in out.open()]
    assert {r["doc_id"] for r in rows} == {"ok.txt"}


@pytest.mark.slow
def test_retrain_stage_runs_the_gate(quickstart: Path) -> None:
    result = cli(
        quickstart,
        "retrain",
        "-c",
        "configs/quickstart.yaml",
        "--set",
        "train.model={kind: tfidf, min_df: 1}",
    )
    # tf-idf challenger against the tf-idf baseline: promoted (0) or not promoted (10); never a failure
    assert result.returncode in (0, 10), result.stderr[-3000:]
    assert (quickstart / "runs/quickstart/retrain_report.md").is_file()
    again = cli(quickstart, "retrain", "-c", "configs/quickstart.yaml", "--set", "train.model={kind: tfidf}")
    assert again.returncode == 11, again.stderr[-2000:]  # data unchanged: nothing to do


def test_config_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  model:\n    kind: bert\n    epochz: 3\n")
    result = cli(tmp_path, "train", "--config", str(bad))
    assert result.returncode == 2
    assert result.stderr.strip() == f"config error: {bad}: train.model.epochz: unknown key"

    result = cli(tmp_path, "run", "--config", str(tmp_path / "absent.yaml"))
    assert result.returncode == 2
    assert "absent.yaml: config file not found" in result.stderr


def test_label_with_an_alias_nobody_has_set_says_so_in_one_line(tmp_path: Path) -> None:
    """The first `label --model ...@champion` before any retrain has promoted a model."""
    write_sample(tmp_path / "data" / "sample")
    config = tmp_path / "c.yaml"
    config.write_text(
        "label:\n  model: models:/ct-sentence-labeller@champion\n  input: data/sample/answers\n"
        "  output: runs/out.parquet\n",
        encoding="utf-8",
    )
    result = cli(tmp_path, "label", "-c", str(config))
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "champion" in errors[0] and "ct-sentence-labeller" in errors[0]


def test_label_settings_are_checked_with_the_config_before_any_model_loads(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("label:\n  model: models:/nowhere@champion\n", encoding="utf-8")
    result = cli(tmp_path, "label", "-c", str(config), "--set", "label.chunk_documents=0")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"config error: {config}: label.chunk_documents: Input should be greater than or equal to 1 (got 0)"
    )
    result = cli(tmp_path, "label", "-c", str(config), "--output", "x.txt")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"config error: {config}: label.output: unknown output format '.txt'; use one of .parquet, .jsonl, .csv "
        "(got 'x.txt')"
    )
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n", encoding="utf-8")
    result = cli(tmp_path, "label", "-c", str(empty))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"config error: {empty}: the config file is empty (no settings); see configs/ for examples"
    )
    assert not (tmp_path / "runs").exists()


def test_missing_input_file_fails_before_work(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"data:\n  train: [{tmp_path}/nope.jsonl]\n  dev: {tmp_path}/nope-dev.jsonl\n")
    result = cli(tmp_path, "train", "--config", str(config))
    assert result.returncode == 2
    assert f"data.train[0]: file not found: {tmp_path}/nope.jsonl" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_invalid_labelled_data_is_refused_with_line_numbers(tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    row = {"id": "a#0", "doc_id": "a", "text": "Konstruerad mening.", "strategy": [], "commitment": "none"}
    train.write_text(json.dumps(row) + "\n" + json.dumps({**row, "id": "a#1", "commitment": "money"}) + "\n")
    dev = tmp_path / "dev.jsonl"
    dev.write_text(json.dumps({**row, "id": "b#0", "doc_id": "b"}) + "\n")
    config = tmp_path / "c.yaml"
    config.write_text(
        f"data:\n  train: [{train}]\n  dev: {dev}\ntrain:\n  model: {{kind: majority}}\n  baselines: []\n"
        f"tracking:\n  uri: sqlite:///{tmp_path}/m.db\n  artifact_location: {tmp_path}/art\n"
    )
    result = cli(tmp_path, "train", "--config", str(config))
    assert result.returncode == 1
    assert f"{train}:2" in result.stderr and "money" in result.stderr


def test_every_subcommand_has_help(tmp_path: Path) -> None:
    for command in ("ingest", "segment", "pretrain", "train", "evaluate", "label", "retrain", "run", "serve"):
        result = cli(tmp_path, command, "--help")
        assert result.returncode == 0 and "--config" in result.stdout, command


def test_help_examples_of_set_work_on_the_shipped_configs(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from pipeline.cli import app
    from pipeline.config import load_config

    monkeypatch.setenv("PIPELINE_SHARED_DIR", "/shared")  # gold.yaml interpolates it; nothing is read
    monkeypatch.setenv("COLUMNS", "400")  # one help line per option, so the examples are not wrapped
    examples = set()
    for command in ("ingest", "segment", "pretrain", "train", "evaluate", "label", "retrain", "run"):
        help_text = CliRunner().invoke(app, [command, "--help"], terminal_width=400).output
        examples |= set(re.findall(r"\b([a-z_]+(?:\.[a-z_0-9]+)+=[^\s,)]+)", help_text))
    assert examples, "the --set help shows an example"
    for config in ("configs/quickstart.yaml", "configs/gold.yaml"):
        for example in examples:
            load_config(ROOT / config, [example])  # raises ConfigError when the example does not fit


def test_label_and_retrain_need_an_explicit_config(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "configs", tmp_path / "configs")  # the quick start would be there to pick up
    for command in ("label", "retrain"):
        result = cli(tmp_path, command)
        assert result.returncode == 2, command
        assert "Missing option '--config'" in result.stderr, result.stderr
    assert not (tmp_path / "runs").exists()


def test_annotation_round_trip_through_the_cli(tmp_path: Path) -> None:
    sample = write_sample(tmp_path / "sample")
    exported = tmp_path / "to_label.csv"
    result = cli(tmp_path, "annotate", "export", str(sample / "labelled/dev.jsonl"), str(exported), "--limit", "5")
    assert result.returncode == 0, result.stderr[-2000:]
    table = pd.read_csv(exported, keep_default_na=False)
    assert len(table) == 5 and {"previous", "text", "next", "strategy", "commitment"} <= set(table.columns)
    table["commitment"] = "none"
    table["strategy"] = ""
    table.to_csv(exported, index=False)
    merged = tmp_path / "new.jsonl"
    result = cli(tmp_path, "annotate", "import", str(exported), str(merged))
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(merged.read_text().splitlines()) == 5

    table.loc[0, "commitment"] = "budget"
    table.to_csv(exported, index=False)
    result = cli(tmp_path, "annotate", "import", str(exported), str(tmp_path / "other.jsonl"))
    assert result.returncode == 1 and "budget" in result.stderr

    dev = str(sample / "labelled/dev.jsonl")
    result = cli(tmp_path, "annotate", "agreement", dev, dev)
    assert result.returncode == 0 and "1.000" in result.stdout and "nan" not in result.stdout


def test_validate_data_reports_documents_in_two_splits(tmp_path: Path) -> None:
    sample = write_sample(tmp_path / "sample")
    ok = cli(tmp_path, "validate-data", str(sample / "labelled/train.jsonl"), str(sample / "labelled/dev.jsonl"))
    assert ok.returncode == 0, ok.stderr
    leaked = tmp_path / "leaked.jsonl"
    first_train_line = (sample / "labelled/train.jsonl").read_text().splitlines()[0]
    row = {**json.loads(first_train_line), "id": "leak#0"}
    leaked.write_text(json.dumps(row, ensure_ascii=False) + "\n")
    bad = cli(tmp_path, "validate-data", str(sample / "labelled/train.jsonl"), str(leaked))
    assert bad.returncode == 1 and f"{leaked}:1" in bad.stderr
