"""Tracking against a real `mlflow server`: nested runs, params, datasets, artifacts, the registered version
and its alias; and a dead server stops a run before any work. Labelled data is constructed for these tests.
"""

from __future__ import annotations

import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow_server import (  # noqa: F401  (fixtures are found by name)
    free_port,
    labelled_files_fixture,
    mlflow_server_fixture,
    tracked_config,
)

from pipeline import registry, tracking
from pipeline.config import PipelineConfig, TrackingConfig
from pipeline.retrain import RetrainStatus, retrain
from pipeline.run import run_stages


def small_training(tmp_path: Path, files: tuple[Path, Path]) -> PipelineConfig:
    return tracked_config(
        tmp_path,
        *files,
        {
            "train": {
                "model": {"kind": "tfidf", "min_df": 1},
                "baselines": [{"kind": "majority"}],
                "output_dir": str(tmp_path / "models"),
            },
            "evaluate": {"output_dir": str(tmp_path / "evaluation")},
            "tracking": {"experiment": "integration"},
        },
    )


@pytest.mark.slow
@pytest.mark.server
def test_training_against_a_real_server_is_fully_tracked(
    mlflow_server: str, tmp_path: Path, labelled_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)  # wins over the sqlite uri in the config
    config = small_training(tmp_path, labelled_files)

    outcome = run_stages(config, ["train", "evaluate"])

    assert outcome.exit_code == 0, [s.message for s in outcome.stages]
    assert mlflow.get_tracking_uri() == mlflow_server
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("integration")
    assert experiment is not None and experiment.artifact_location.startswith("mlflow-artifacts:")
    runs = client.search_runs([experiment.experiment_id])
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(children) == {"train", "evaluate"}

    # parent: the resolved config as params and as a file; commit and data digests as tags
    assert parent.data.params["train.model.kind"] == "tfidf"
    assert parent.data.params["tracking.registered_model"] == "ct-test-labeller"
    assert {"git_commit", "config_file", "dataset.train.digest", "dataset.dev.digest"} <= set(parent.data.tags)
    resolved = mlflow.artifacts.load_text(f"runs:/{parent.info.run_id}/config/resolved.yaml")
    assert "registered_model: ct-test-labeller" in resolved

    # train: datasets as inputs, the model card, the registered version with alias challenger
    train_run = client.get_run(children["train"].info.run_id)
    contexts = {
        (d.dataset.name, next(t.value for t in d.tags if t.key == "mlflow.data.context"))
        for d in train_run.inputs.dataset_inputs
    }
    assert contexts == {("train", "train"), ("dev", "dev")}
    # one run per trained model under the train stage: its settings, scores, card and logged model
    model_runs = {
        r.data.tags["model"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == train_run.info.run_id
    }
    assert set(model_runs) == {"model", "baseline-majority"}
    model_run = model_runs["model"]
    assert model_run.data.params["kind"] == "tfidf"
    assert model_run.data.metrics["commitment_macro_f1_ci_low"] <= model_run.data.metrics["commitment_macro_f1"]
    card = mlflow.artifacts.load_text(f"runs:/{model_run.info.run_id}/model_card/model.md")
    assert "commitment_macro_f1" in card and "Known limits" in card
    version = registry.get_alias_version("ct-test-labeller", registry.CHALLENGER)
    assert version is not None
    registered = client.get_model_version("ct-test-labeller", str(version))
    assert registered.run_id == model_run.info.run_id and registered.description == card
    assert registry.get_alias_version("ct-test-labeller", registry.CHAMPION) is None  # only the gate sets it

    # evaluate: metrics per model, files, classification report, the errors table
    evaluate_run = children["evaluate"]
    assert 0.0 <= evaluate_run.data.metrics["model.commitment_macro_f1"] <= 1.0
    assert "baseline-majority.strategy_macro_f1" in evaluate_run.data.metrics
    listed = {a.path for a in client.list_artifacts(evaluate_run.info.run_id, "evaluation/model")}
    expected = {"report.json", "errors.csv", "confusion_commitment.png", "classification_report.md"}
    assert {f"evaluation/model/{name}" for name in expected} <= listed
    majority = {a.path for a in client.list_artifacts(evaluate_run.info.run_id, "evaluation/baseline-majority")}
    assert "evaluation/baseline-majority/most_confident_errors.json" in majority  # TF-IDF makes none here

    # the registered model loads from the server by alias and labels a (constructed) document
    model = mlflow.pyfunc.load_model("models:/ct-test-labeller@challenger")
    text = "Regeringen tillför 30 miljoner kronor till skyddet av offentliga platser mot attacker."
    out = model.predict(pd.DataFrame({"id": ["d"], "text": [text]}))
    assert list(out["commitment"]) == ["funding"]


def test_unreachable_server_fails_at_start_with_a_clear_message(
    tmp_path: Path, labelled_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    config = small_training(tmp_path, labelled_files)

    with pytest.raises(tracking.TrackingUnavailable, match=f"{dead} is not reachable"):
        tracking.configure_tracking(config.tracking, "x")

    started = time.monotonic()
    outcome = run_stages(config, ["train", "evaluate"])
    assert outcome.exit_code != 0 and "not reachable" in outcome.stages[-1].message
    assert not (tmp_path / "models").exists()  # no training happened

    result = retrain(config)
    assert result.status is RetrainStatus.FAILED and "not reachable" in result.message
    assert not Path(config.retrain.report).exists() and not Path(config.retrain.state_file).exists()
    assert time.monotonic() - started < 30


def test_local_store_folders_and_experiment_artifact_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = TrackingConfig(uri=f"sqlite:///{tmp_path / 'nested' / 'mlflow.db'}", artifact_location=tmp_path / "art")
    assert tracking.configure_tracking(cfg, "my experiment") == cfg.uri
    assert (tmp_path / "nested" / "mlflow.db").is_file()
    experiment = mlflow.get_experiment_by_name("my experiment")
    assert experiment.artifact_location == (tmp_path / "art" / "my-experiment").resolve().as_uri()
    assert registry.get_alias_version("no-such-model", registry.CHAMPION) is None


def test_params_are_flat_and_cut() -> None:
    config = PipelineConfig.model_validate(
        {
            "data": {"train": [f"data/{'x' * 40}-{i}.jsonl" for i in range(20)]},
            "label": {"input": f"inbox/{'y' * 600}.jsonl"},
        }
    )
    params = tracking.config_params(config)
    assert params["train.model.kind"] == "bert"
    # a list of sections by index, as --set takes it, not one repr cut at MAX_PARAM_CHARS
    assert params["data.train.19.path"] == f"data/{'x' * 40}-19.jsonl" and "data.train" not in params
    assert len(params["label.input"]) == tracking.MAX_PARAM_CHARS and params["label.input"].endswith("…")


def test_redact_hides_credentials() -> None:
    assert tracking.redact("https://user:secret@mlflow.example:5000/x") == "https://***@mlflow.example:5000/x"
    assert tracking.redact("sqlite:///runs/mlflow.db") == "sqlite:///runs/mlflow.db"


def test_file_digest_follows_content(tmp_path: Path) -> None:
    a = tmp_path / "a.jsonl"
    a.write_text("one\n")
    first = tracking.file_digest([a])
    assert tracking.file_digest([a]) == first
    a.write_text("two\n")
    assert tracking.file_digest([a]) != first
    with pytest.raises(FileNotFoundError, match=r"missing\.jsonl"):
        tracking.file_digest([tmp_path / "missing.jsonl"])


def test_model_card_shows_intervals() -> None:
    card = registry.write_model_card(
        name="m",
        kind="tfidf",
        data={"train": "12 sentences"},
        metrics={
            "commitment_macro_f1": 0.8,
            "commitment_macro_f1_ci_low": 0.7,
            "commitment_macro_f1_ci_high": 0.9,
        },
    )
    assert "| commitment_macro_f1 | 0.800 | 0.700 – 0.900 |" in card
    assert "commitment_macro_f1_ci_low |" not in card
