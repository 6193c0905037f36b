"""No code runs from a model file: a tampered TF-IDF folder is refused, from a folder and from the registry.

The tampered files are built here: a real saved TF-IDF model whose `estimators.skops` gets one extra entry
that, loaded by skops with the types it reports trusted, calls `builtins.exec` (it would write a marker file).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pipeline.models import load_model
from pipeline.models.skops_file import UntrustedModelFile, untrusted_nodes
from pipeline.models.tfidf import TfidfModel
from tests.labelled_examples import constructed_sentences

ROOT = Path(__file__).resolve().parents[1]


def tamper(estimators: Path, marker: Path) -> None:
    """Add an entry to a skops file that runs `open(marker, 'w')` through `builtins.exec` when constructed."""
    with zipfile.ZipFile(estimators) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    schema = json.loads(members["schema.json"])
    payload = f"open({str(marker)!r}, 'w').write('code from a model file ran')"
    call = {
        "__class__": "exec",
        "__module__": "builtins",
        "__loader__": "ConstructorFromReduceNode",
        "__id__": 1,
        "content": {
            "__class__": "tuple",
            "__module__": "builtins",
            "__loader__": "TupleNode",
            "__id__": 2,
            "content": [
                {
                    "__class__": "str",
                    "__module__": "builtins",
                    "__loader__": "JsonNode",
                    "content": json.dumps(payload),
                    "is_json": True,
                    "__id__": 3,
                }
            ],
        },
    }
    schema["content"]["strategy"]["content"].append(call)
    members["schema.json"] = json.dumps(schema).encode()
    with zipfile.ZipFile(estimators, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


@pytest.fixture(scope="module")
def tfidf_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tfidf") / "model"
    TfidfModel(min_df=1, context=True, tune_thresholds=False).fit(constructed_sentences()).save(folder)
    return folder


def test_a_saved_model_holds_only_allowed_types(tfidf_folder: Path) -> None:
    assert untrusted_nodes(tfidf_folder / "estimators.skops") == []
    assert load_model(tfidf_folder).kind == "tfidf"


def test_a_tampered_estimators_file_is_refused_before_any_code_runs(tfidf_folder: Path, tmp_path: Path) -> None:
    import shutil

    import skops.io

    folder = tmp_path / "tampered"
    shutil.copytree(tfidf_folder, folder)
    marker = tmp_path / "pwned"
    tamper(folder / "estimators.skops", marker)
    # the file really is an exploit: skops with the types it reports trusted runs the code (this is what the
    # old `builtins.*` prefix rule allowed)
    probe = tmp_path / "probe.skops"
    shutil.copy(folder / "estimators.skops", probe)
    skops.io.load(probe, trusted=skops.io.get_untrusted_types(file=probe))
    assert marker.exists()
    marker.unlink()

    with pytest.raises(UntrustedModelFile) as refused:
        load_model(folder)
    message = str(refused.value)
    assert str(folder / "estimators.skops") in message and "builtins.exec" in message and "\n" not in message
    assert not marker.exists()

    (folder / "estimators.skops").write_bytes(b"not a zip file")
    with pytest.raises(UntrustedModelFile, match="not a skops estimators file"):
        load_model(folder)


# --- through the CLI ------------------------------------------------------------------------------------


def cli(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=600
    )


def label_workdir(tmp_path: Path) -> Path:
    documents = tmp_path / "documents.jsonl"
    documents.write_text(
        json.dumps({"id": "svar-1", "text": "Regeringen avsätter 40 miljoner kronor till förebyggande arbete."}) + "\n",
        encoding="utf-8",
    )
    (tmp_path / "config.yaml").write_text(
        f"label:\n  input: {documents}\n  output: {tmp_path / 'out' / 'labelled.jsonl'}\n"
        f"tracking:\n  uri: sqlite:///{tmp_path / 'mlflow.db'}\n  artifact_location: {tmp_path / 'artifacts'}\n",
        encoding="utf-8",
    )
    return tmp_path


def assert_refused(result: subprocess.CompletedProcess[str], marker: Path) -> None:
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert "estimators.skops: refusing to load untrusted type builtins.exec" in errors[0]
    assert not marker.exists()


@pytest.mark.slow
def test_label_refuses_a_tampered_model_folder(tfidf_folder: Path, tmp_path: Path) -> None:
    import shutil

    workdir = label_workdir(tmp_path)
    folder = tmp_path / "tampered"
    shutil.copytree(tfidf_folder, folder)
    marker = tmp_path / "pwned"
    tamper(folder / "estimators.skops", marker)
    result = cli(workdir, "label", "-c", "config.yaml", "--model", str(folder))
    assert_refused(result, marker)
    assert str(folder / "estimators.skops") in result.stderr.replace("\n", "")


@pytest.mark.slow
def test_label_refuses_a_tampered_registry_artifact(tfidf_folder: Path, tmp_path: Path) -> None:
    """The artifact is tampered in the store after registration, as someone with write access to it could."""
    import mlflow

    from pipeline import registry
    from pipeline.config import SegmentConfig

    workdir = label_workdir(tmp_path)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        experiment = mlflow.create_experiment("tampered", artifact_location=(tmp_path / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment):
            logged = registry.log_sentence_model(tfidf_folder, "sentence_labeller", SegmentConfig())
        registry.set_champion("ct-tampered", registry.register(logged.model_uri, "ct-tampered"))
    finally:
        mlflow.set_tracking_uri(None)
    stored = sorted((tmp_path / "artifacts").rglob("estimators.skops"))
    assert stored, "the registered model's estimators file is in the artifact store"
    marker = tmp_path / "pwned"
    for file in stored:
        tamper(file, marker)
    result = cli(workdir, "label", "-c", "config.yaml", "--model", "models:/ct-tampered@champion")
    assert_refused(result, marker)
