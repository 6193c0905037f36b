"""The review notebooks run top to bottom against a real tracking store and a real labelling output.

The store is built here with the project's own code (baselines trained on the bundled constructed sample,
evaluated, logged and registered); the labelled file is written by `pipeline.label` over the sample answers.
Committed notebooks must carry no outputs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import nbformat
import pytest

from pipeline import registry, tracking, tracking_results
from pipeline.config import EvaluateConfig, LabelConfig, PipelineConfig, SegmentConfig
from pipeline.io.documents import read_documents
from pipeline.label import label_documents
from pipeline.labelled_data import read_training_data, sentence_texts
from pipeline.labelling import ModelInfo
from pipeline.models.majority import MajorityModel
from pipeline.models.tfidf import TfidfModel
from pipeline.reports import write_report
from pipeline.sample import sample_dir
from pipeline.scores import evaluate_predictions

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
EXPERIMENT = "notebook-review"
REGISTERED = "ct-review-labeller"
CELL_TIMEOUT_S = 180


@dataclass(frozen=True)
class ReviewInputs:
    tracking_uri: str
    labelled: Path
    champion: int
    challenger: int
    root: Path


def _build_store(root: Path) -> ReviewInputs:
    """Train two baselines on the sample, log a curve, evaluate, register; label the sample answers."""
    sample = sample_dir()
    config = PipelineConfig.model_validate(
        {
            "name": "review-fixture",
            "data": {
                "train": [str(sample / "labelled" / "train.jsonl")],
                "dev": str(sample / "labelled" / "dev.jsonl"),
            },
            "evaluate": {"bootstrap_samples": 20, "top_errors": 5},
            "tracking": {
                "uri": f"sqlite:///{root / 'mlflow.db'}",
                "artifact_location": str(root / "mlartifacts"),
                "experiment": EXPERIMENT,
                "registered_model": REGISTERED,
                "log_system_metrics": False,
            },
        }
    )
    uri = tracking.configure_tracking(config.tracking, config.experiment_name())
    train, dev = read_training_data(config.data.train, config.data.dev)
    assert dev is not None
    dev_texts = sentence_texts(dev)
    quick = EvaluateConfig(bootstrap_samples=0)
    models = {"majority": MajorityModel(), "tfidf": TfidfModel(min_df=1)}
    versions: dict[str, int] = {}
    with tracking.pipeline_run(config, run_name="review-fixture"):
        with tracking.stage_run(config, "train"):
            for name, model in models.items():
                # one run per model, as `pipeline run` logs them: settings, curve, scores, logged model
                with tracking.model_run(name, {"kind": model.kind}, "model" if name == "tfidf" else "baseline"):
                    if name == "tfidf":  # a real curve: dev scores of TF-IDF fitted on a growing number of documents
                        doc_ids = list(dict.fromkeys(s.doc_id for s in train))
                        for step, n_docs in enumerate(range(4, len(doc_ids) + 1, 3)):
                            subset = [s for s in train if s.doc_id in set(doc_ids[:n_docs])]
                            curve_model = TfidfModel(min_df=1, char_ngrams=(3, 4), tune_thresholds=False)
                            probs = curve_model.fit(subset).predict_proba(dev_texts)
                            metrics = evaluate_predictions(dev, probs, quick).metrics
                            tracking.log_epoch(
                                {f"dev_{k}": metrics[k] for k in ("commitment_macro_f1", "strategy_macro_f1")}, step
                            )
                    model.fit(train, dev)
                    model.save(root / "models" / name)
                    info = registry.log_sentence_model(root / "models" / name, name, config.segment)
                    versions[name] = registry.register(info.model_uri, REGISTERED)
                    report = evaluate_predictions(dev, model.predict_proba(dev_texts), config.evaluate, name)
                    scores = tracking.headline(report.metrics)
                    tracking.log_model_scores(scores, model_id=info.model_id)
                    if name == "tfidf":  # the pipeline run's headline copy: not a model of its own
                        tracking.log_pipeline_metrics(scores)
        with tracking.stage_run(config, "evaluate"):
            for name, model in models.items():
                report = evaluate_predictions(dev, model.predict_proba(dev_texts), config.evaluate, name)
                files = write_report(report, root / "evaluation" / name)
                tracking_results.log_evaluation(report, files, prefix=name)
    registry.set_champion(REGISTERED, versions["majority"])

    labelled = root / "labelled_sentences.parquet"
    result = label_documents(
        LabelConfig(output=labelled),
        models["tfidf"],
        ModelInfo(REGISTERED, str(versions["tfidf"]), f"models:/{REGISTERED}/{versions['tfidf']}"),
        read_documents(sample / "answers.jsonl"),
        SegmentConfig(),
        show_progress=False,
    )
    assert result.labelled == 5 and result.rejected == 0
    return ReviewInputs(uri, labelled, champion=versions["majority"], challenger=versions["tfidf"], root=root)


@pytest.fixture(scope="module")
def review_inputs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReviewInputs]:
    previous = mlflow.get_tracking_uri()
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        inputs = _build_store(tmp_path_factory.mktemp("review"))
    yield inputs
    mlflow.set_tracking_uri(previous)


def _execute(name: str, env: dict[str, str]) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        # the kernel inherits this environment; the repository root makes `pipeline` importable uninstalled
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        client = NotebookClient(
            notebook,
            kernel_name="python3",
            timeout=CELL_TIMEOUT_S,
            resources={"metadata": {"path": str(REPO)}},
        )
        client.execute()
    return notebook


def _text_outputs(notebook: nbformat.NotebookNode) -> str:
    chunks = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            chunks.append(output.get("text", ""))
            data = output.get("data", {})
            chunks.append(data.get("text/plain", ""))
            chunks.append(data.get("text/html", ""))
    return "\n".join(chunks)


def _stderr(notebook: nbformat.NotebookNode) -> str:
    return "".join(
        output.get("text", "")
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if output.get("name") == "stderr"
    )


def _image_outputs(notebook: nbformat.NotebookNode) -> int:
    return sum("image/png" in output.get("data", {}) for cell in notebook.cells for output in cell.get("outputs", []))


@pytest.mark.parametrize("name", ["01_experiment_review.ipynb", "02_labelled_answers.ipynb"])
def test_committed_notebooks_carry_no_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs, f"{name}: a code cell has outputs; clear them before committing"
            assert cell.execution_count is None, f"{name}: a code cell has an execution count"
    parameters = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1, f"{name}: expected exactly one cell tagged 'parameters'"


@pytest.mark.slow
def test_experiment_review_notebook_runs(review_inputs):
    notebook = _execute(
        "01_experiment_review.ipynb",
        {"MLFLOW_TRACKING_URI": review_inputs.tracking_uri, "PIPELINE_EXPERIMENT": EXPERIMENT},
    )
    text = _text_outputs(notebook)
    # runs table, both models compared, the errors table, and the aliases
    assert "review-fixture" in text
    assert "tfidf" in text and "majority" in text
    assert "dev_commitment_macro_f1" in text  # the curve's legend/title names its metric
    assert "confidence" in text
    assert f"champion: {REGISTERED} version {review_inputs.champion}" in text
    assert f"challenger: {REGISTERED} version {review_inputs.challenger}" in text
    # curves, model comparison, per-class comparison, and the logged confusion/calibration PNGs
    assert _image_outputs(notebook) >= 6
    assert "system/" not in text  # MLflow's machine samples are not curves
    assert not _stderr(notebook), _stderr(notebook)[:2000]  # no progress bars, no warnings

    # the logged confusion matrices and reliability diagrams: each model's own, under its own name
    from pipeline import review_runs, run_history

    client = mlflow.MlflowClient(review_inputs.tracking_uri)
    runs = run_history.load_runs(EXPERIMENT, review_inputs.tracking_uri)
    scores = review_runs.model_scores(runs)
    assert set(scores["model"]) == {"majority", "tfidf"}  # no run name posing as a model
    evaluation = run_history.fetch_evaluation_run_ids(client, list(runs["run_id"]))[0]
    images = run_history.fetch_evaluation_images(client, evaluation, review_inputs.root / "images")
    by_model: dict[str, dict[str, bytes]] = {}
    for png in images:
        by_model.setdefault(png.parent.name, {})[png.name] = png.read_bytes()
    assert set(by_model) == {"majority", "tfidf"}
    for name in by_model["tfidf"]:
        assert by_model["tfidf"][name] != by_model["majority"][name], name
    shown = [
        output["data"]["image/png"]
        for cell in notebook.cells
        if "fetch_evaluation_images" in cell.source
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    assert len(shown) == len(images) and len(set(shown)) == len(shown)  # the notebook shows distinct images

    errors = run_history.fetch_confident_errors(client, evaluation, review_inputs.root / "errors", top=3)
    assert list(errors.columns[:4]) == ["text", "gold", "predicted", "confidence"]
    assert set(errors["model"]) == {"majority", "tfidf"}  # every model's errors, not only the surest model's


@pytest.mark.slow
def test_labelled_answers_notebook_runs(review_inputs):
    notebook = _execute("02_labelled_answers.ipynb", {"PIPELINE_LABELLED": str(review_inputs.labelled)})
    text = _text_outputs(notebook)
    # the sample's invented ministers and answer years come through from the summary metadata
    for minister in ("Tomas Ekebrand", "Erik Vallgren", "Sara Lindholt", "Maria Storvik", "Ingrid Falkvik"):
        assert minister in text
    assert "2025" in text and "2017" in text
    assert "weakest_head" in text  # the review list
    assert _image_outputs(notebook) >= 3
    assert not _stderr(notebook), _stderr(notebook)[:2000]
    # which answers announce money: the funding sentences themselves, as the report shows them
    import pandas as pd

    labelled = pd.read_parquet(review_inputs.labelled)
    for sentence in labelled.loc[labelled["commitment"] == "funding", "text"]:
        assert sentence[:60] in text
