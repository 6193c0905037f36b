"""What a reviewer finds in the MLflow UI after the quick start, asserted through a real server's REST API.

The quick start (shrunk, as in tests/test_cli.py) runs in a temporary folder against a real `mlflow server`
on 127.0.0.1; every assertion below is a question the UI must answer without changing a setting: which
settings and scores the pipeline run has, one run per trained model with its own settings and F1, each
logged model's own F1 (the Models tab), the registered model's description and aliases.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from mlflow_server import start_server, stop_server

from pipeline.sample import write_sample

ROOT = Path(__file__).resolve().parents[1]
MODEL_NAME = "ct-sentence-labeller-quickstart"
FAST = [
    "pretrain.max_steps=20",
    "pretrain.batch_size=16",
    "train.model.members.0.epochs=2",
    "evaluate.bootstrap_samples=50",
]
HEADLINE = ("commitment_macro_f1", "strategy_macro_f1")


@pytest.fixture(scope="module")
def quickstart_on_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a real MLflow server after `pipeline run -c configs/quickstart.yaml` logged to it."""
    root = tmp_path_factory.mktemp("review-server")
    process, url = start_server(root / "server")
    try:
        workdir = root / "work"
        write_sample(workdir / "data" / "sample")
        shutil.copytree(ROOT / "configs", workdir / "configs")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": url}
        args = [arg for item in FAST for arg in ("--set", item)]
        result = subprocess.run(
            [sys.executable, "-m", "pipeline", "run", "-c", "configs/quickstart.yaml", *args],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert result.returncode == 0, result.stderr[-4000:]
        yield url
    finally:
        stop_server(process)


def _api(url: str, path: str, body: dict | None = None, **params: str) -> dict:
    if body is None:
        response = requests.get(f"{url}/api/2.0/mlflow/{path}", params=params, timeout=30)
    else:
        response = requests.post(f"{url}/api/2.0/mlflow/{path}", json=body, timeout=30)
    assert response.status_code == 200, (path, response.text[:500])
    return response.json()


def _runs(url: str) -> tuple[str, list[dict]]:
    experiment = _api(url, "experiments/get-by-name", experiment_name="quickstart")["experiment"]
    runs = _api(url, "runs/search", {"experiment_ids": [experiment["experiment_id"]], "max_results": 1000})["runs"]
    return experiment["experiment_id"], runs


def _tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def _params(run: dict) -> dict[str, str]:
    return {p["key"]: p["value"] for p in run["data"].get("params", [])}


def _metrics(run: dict) -> dict[str, float]:
    return {m["key"]: m["value"] for m in run["data"].get("metrics", [])}


@pytest.mark.slow
def test_experiment_opens_on_training_runs(quickstart_on_server: str) -> None:
    experiment = _api(quickstart_on_server, "experiments/get-by-name", experiment_name="quickstart")["experiment"]
    tags = {t["key"]: t["value"] for t in experiment.get("tags", [])}
    assert tags.get("mlflow.experimentKind") == "custom_model_development"  # not the GenAI pages


@pytest.mark.slow
def test_pipeline_run_pairs_settings_with_headline_scores(quickstart_on_server: str) -> None:
    _, runs = _runs(quickstart_on_server)
    parents = [r for r in runs if "mlflow.parentRunId" not in _tags(r)]
    assert len(parents) == 1
    params, metrics = _params(parents[0]), _metrics(parents[0])
    assert params["train.model.kind"] == "ensemble"
    assert params["train.model.members.0.learning_rate"] == "0.001"  # members flattened, not a cut repr
    assert params["train.model.members.1.kind"] == "tfidf"
    for key in HEADLINE:
        assert 0.0 <= metrics[f"{key}_ci_low"] <= metrics[key] <= metrics[f"{key}_ci_high"] <= 1.0


@pytest.mark.slow
def test_one_run_per_trained_model_with_its_settings_and_scores(quickstart_on_server: str) -> None:
    _, runs = _runs(quickstart_on_server)
    by_model = {_tags(r)["model"]: r for r in runs if "model" in _tags(r)}
    assert set(by_model) == {"model", "baseline-majority", "baseline-keyword", "baseline-tfidf"}
    ensemble = by_model["model"]
    assert _params(ensemble)["kind"] == "ensemble"
    assert _params(ensemble)["member0.learning_rate"] == "0.001" and _params(ensemble)["member1.kind"] == "tfidf"
    assert _params(by_model["baseline-tfidf"])["kind"] == "tfidf"
    for name, run in by_model.items():
        metrics = _metrics(run)
        for key in HEADLINE:
            assert metrics[f"{key}_ci_low"] <= metrics[key] <= metrics[f"{key}_ci_high"], name
        assert metrics["fit_seconds"] > 0, name
        assert not [k for k in metrics if k.startswith(("model.", "baseline-"))], (name, sorted(metrics))


@pytest.mark.slow
def test_each_logged_model_lists_its_own_f1(quickstart_on_server: str) -> None:
    experiment_id, runs = _runs(quickstart_on_server)
    found = _api(quickstart_on_server, "logged-models/search", {"experiment_ids": [experiment_id]})["models"]
    by_name = {m["info"]["name"]: m for m in found}
    assert set(by_name) == {"model", "baseline-majority", "baseline-keyword", "baseline-tfidf"}
    run_scores = {_tags(r)["model"]: _metrics(r) for r in runs if "model" in _tags(r)}
    for name, logged in by_name.items():
        metrics = {m["key"]: m["value"] for m in logged["data"]["metrics"]}
        assert metrics["commitment_macro_f1"] == pytest.approx(run_scores[name]["commitment_macro_f1"]), name
        assert "strategy_macro_f1" in metrics and "fit_seconds" in metrics, name
        assert not [k for k in metrics if k.startswith(("model.", "baseline-"))], (name, sorted(metrics))


@pytest.mark.slow
def test_registered_model_and_version_are_described(quickstart_on_server: str) -> None:
    model = _api(quickstart_on_server, "registered-models/get", name=MODEL_NAME)["registered_model"]
    assert "strategy dimension" in model["description"] and "@champion" in model["description"]
    assert {a["alias"]: a["version"] for a in model.get("aliases", [])} == {"challenger": "1"}
    version = _api(quickstart_on_server, "model-versions/get", name=MODEL_NAME, version="1")["model_version"]
    assert version["description"].startswith(f"# Model card: {MODEL_NAME} (model)")
    assert "commitment_macro_f1" in version["description"] and "Known limits" in version["description"]


@pytest.mark.slow
def test_pretraining_logs_heldout_loss_once_per_step(quickstart_on_server: str) -> None:
    """The pretrain run's held-out loss curve: one point per step (the summary does not repeat the last one)."""
    _, runs = _runs(quickstart_on_server)
    pretrain = [r for r in runs if _tags(r).get("stage") == "pretrain"]
    assert len(pretrain) == 1
    run_id = pretrain[0]["info"]["run_id"]
    history = _api(quickstart_on_server, "metrics/get-history", run_id=run_id, metric_key="heldout_loss")["metrics"]
    steps = [m["step"] for m in sorted(history, key=lambda m: (m["timestamp"], m["step"]))]
    # in logging order the steps only grow (a summary at step 0 after the curve's last point would not)
    assert steps and all(a < b for a, b in itertools.pairwise(steps)), steps
    assert steps[-1] == int(_metrics(pretrain[0])["steps"])
