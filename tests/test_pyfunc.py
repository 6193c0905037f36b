"""The registered pyfunc: loads from its URI alone in a fresh process and labels documents and sentences.

All texts are constructed for these tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow_server import constructed_sentences, tracked_config, train_and_register, write_jsonl

from pipeline import pyfunc, registry, tracking
from pipeline.config import SegmentConfig, TfidfSpec
from pipeline.models.base import load_model
from pipeline.schema import COMMITMENT_LABELS, STRATEGY_LABELS, Document, SentenceText
from pipeline.segment import segment_document

pytestmark = pytest.mark.slow  # logs to a real MLflow store and loads the pyfunc in a fresh interpreter

DOCUMENTS = pd.DataFrame(
    {
        "id": ["svar-1", "svar-2", "tomt"],
        "text": [
            "Regeringen tillför 12 miljoner kronor till skolornas arbete mot extremistisk propaganda. "
            "Jag tackar för frågan.",
            "En särskild utredare ska föreslå förändringar som rör skyddet av offentliga platser.",
            "   ",
        ],
    }
)


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, Path, Path]:
    """A TF-IDF model trained on constructed data and registered in a sqlite store: (tracking uri, model uri,
    saved model folder, store folder)."""
    root = tmp_path_factory.mktemp("pyfunc")
    train = write_jsonl(constructed_sentences(20, "train", seed=1), root / "train.jsonl")
    dev = write_jsonl(constructed_sentences(8, "dev", seed=2), root / "dev.jsonl")
    config = tracked_config(root, train, dev)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    uri = tracking.configure_tracking(config.tracking, config.experiment_name())
    version = train_and_register(config, TfidfSpec(min_df=1), root / "model")
    assert registry.get_alias_version(config.tracking.registered_model, registry.CHALLENGER) == version
    return uri, f"models:/{config.tracking.registered_model}@challenger", root / "model", root


FRESH_PROCESS = """
import importlib.util, json, sys
import mlflow, pandas as pd
mlflow.set_tracking_uri(sys.argv[1])
installed = importlib.util.find_spec("pipeline") is not None
model = mlflow.pyfunc.load_model(sys.argv[2])
documents = pd.read_json(sys.argv[3], orient="records")
sentences = pd.DataFrame({"doc_id": ["a", "a", "b"], "text": [
    "Anhöriga kan få stöd och vägledning i frågor om det förebyggande arbetet mot radikalisering bland unga.",
    "Hotet mot Sverige är fortsatt allvarligt.",
    "Myndigheten har fått i uppdrag att samordna kontrollen av sprängämnesprekursorer och vapen.",
]})
import pipeline
print(json.dumps({
    "installed": installed,
    "pipeline_from": pipeline.__file__,
    "documents": model.predict(documents).to_dict(orient="records"),
    "sentences": model.predict(sentences).to_dict(orient="records"),
}))
"""


def test_fresh_process_loads_from_uri_and_labels_documents_and_sentences(
    registered: tuple[str, str, Path, Path], tmp_path: Path
) -> None:
    tracking_uri, model_uri, model_dir, _ = registered
    documents_file = tmp_path / "documents.json"
    DOCUMENTS.to_json(documents_file, orient="records", force_ascii=False)
    # a bare interpreter outside the repository: nothing but the URI (and the store it names)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, tracking_uri, model_uri, str(documents_file)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    if not out["installed"]:
        assert "/code/pipeline/" in out["pipeline_from"], "the bundled package should have been used"

    documents = pd.DataFrame(out["documents"])
    assert list(documents.columns) == pyfunc.output_columns()
    expected = [
        s
        for doc_id, text in zip(DOCUMENTS["id"][:2], DOCUMENTS["text"][:2], strict=True)
        for s in segment_document(Document(id=doc_id, text=text), SegmentConfig())
    ]
    assert [(r.doc_id, r.index, r.start, r.end, r.text) for r in documents.itertuples()] == [
        (s.doc_id, s.index, s.start, s.end, s.text) for s in expected
    ]
    assert "tomt" not in set(documents["doc_id"])  # an empty document yields no rows
    first = documents.iloc[0]
    assert first["commitment"] == "funding"
    assert "forebygga" in first["strategy"]  # a list of labels

    sentences = pd.DataFrame(out["sentences"])
    assert list(sentences["doc_id"]) == ["a", "a", "b"]
    assert list(sentences["index"]) == [0, 1, 0]
    assert list(sentences["commitment"]) == ["support", "none", "institution"]
    assert list(sentences["end"]) == [len(t) for t in sentences["text"]]

    # the same numbers as the saved model gives in this process
    model = load_model(model_dir)
    pairs = list(zip(sentences["doc_id"], sentences["text"], strict=True))
    from pipeline.schema import with_context

    probs = model.predict_proba(with_context(pairs))
    np.testing.assert_allclose(sentences[[f"p_{x}" for x in COMMITMENT_LABELS]].to_numpy(), probs.commitment)
    np.testing.assert_allclose(sentences[[f"p_{x}" for x in STRATEGY_LABELS]].to_numpy(), probs.strategy)


def test_text_only_sentences_are_labelled_without_context(registered: tuple[str, str, Path, Path]) -> None:
    tracking_uri, model_uri, model_dir, _ = registered
    mlflow.set_tracking_uri(tracking_uri)
    loaded = mlflow.pyfunc.load_model(model_uri)
    texts = ["Jag tackar för frågan.", "Regeringen tillför 7 miljoner kronor till säkerhetsskyddet."]
    out = loaded.predict(pd.DataFrame({"text": texts}))
    assert list(out["text"]) == texts
    assert list(out["doc_id"]) == ["", ""]
    probs = load_model(model_dir).predict_proba([SentenceText(text=t) for t in texts])
    np.testing.assert_allclose(out[[f"p_{x}" for x in COMMITMENT_LABELS]].to_numpy(), probs.commitment)
    assert np.allclose(out[[f"p_{x}" for x in COMMITMENT_LABELS]].sum(axis=1), 1.0)
    inner = loaded.unwrap_python_model()
    assert isinstance(inner, pyfunc.SentenceLabellerPyfunc)
    assert inner.segment_config.join_hard_wrapped_lines is True
    # an empty document is not dropped silently: it is a reject with its reason
    labelled = inner.label(DOCUMENTS)
    assert labelled.rejects == [
        {
            "id": "tomt",
            "source": "label",
            "reason": "empty document (no text, or only whitespace)",
            "severity": "rejected",
        }
    ]
    assert labelled.labelled == 2 and not labelled.sentences["truncated"].to_pylist().count(True)
    assert set(labelled.sentences["model_name"].to_pylist()) == {"model"}


def test_bad_input_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="'text' column"):
        pyfunc.check_input(pd.DataFrame({"sentence": ["x"]}))
    with pytest.raises(ValueError, match="both 'id'"):
        pyfunc.check_input(pd.DataFrame({"id": ["d"], "doc_id": ["d"], "text": ["x"]}))
    with pytest.raises(ValueError, match="rows \\[1\\]"):
        pyfunc.check_input(pd.DataFrame({"doc_id": ["d", "d"], "text": ["x", 3]}))


def test_logged_model_bundles_code_schema_segmenter_signature_and_example(
    registered: tuple[str, str, Path, Path], tmp_path: Path
) -> None:
    tracking_uri, model_uri, _, _ = registered
    mlflow.set_tracking_uri(tracking_uri)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(tmp_path)))
    assert (local / "code" / "pipeline" / "pyfunc.py").is_file()
    assert not list((local / "code").rglob("__pycache__"))
    label_schema = json.loads((local / "artifacts" / "label_schema.json").read_text())
    assert label_schema["strategy"] == list(STRATEGY_LABELS)
    assert label_schema["commitment"] == list(COMMITMENT_LABELS)
    assert label_schema["model_name"] == "model" and len(label_schema["model_version"]) == 16
    assert json.loads((local / "artifacts" / "segmenter.json").read_text())["max_sentence_chars"] == 2000
    assert (local / "input_example.json").is_file()
    requirements = (local / "requirements.txt").read_text()
    assert "skops==" in requirements and "torch" not in requirements
    info = mlflow.models.get_model_info(model_uri)
    assert [c["name"] for c in info.signature.outputs.to_dict()] == pyfunc.output_columns()
    assert registry.download_model_folder(model_uri, tmp_path / "again").joinpath("model.json").is_file()
