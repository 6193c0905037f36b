"""Behaviour unchanged: a model folder saved by earlier code labels the quick-start answers as that code did.

The fixture (tests/fixtures/saved_models/quickstart-2026-12, see its README) holds the folder and what the code
of its day wrote with it, through batch labelling and through the pyfunc; here the current code labels the
same documents through both paths. Rows, labels and flags must be equal, probabilities within 1e-6.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config import LabelConfig, SegmentConfig, TrackingConfig
from pipeline.io.documents import read_documents
from pipeline.label import label_documents, model_from_folder
from pipeline.schema import COMMITMENT_PROBABILITY_COLUMNS, STRATEGY_PROBABILITY_COLUMNS

SAVED = Path(__file__).parent / "fixtures" / "saved_models" / "quickstart-2026-12"
MODEL, REFERENCE = SAVED / "model", SAVED / "reference"
DOCUMENTS = REFERENCE / "documents.jsonl"
PROBABILITIES = [*STRATEGY_PROBABILITY_COLUMNS, *COMMITMENT_PROBABILITY_COLUMNS]
COLUMNS = ["doc_id", "index", "start", "end", "role", "text", "strategy", "commitment"]


def strategy_sets(values: pd.Series) -> list[tuple[str, ...]]:
    """Strategy labels as tuples: a list now, a ';'-joined string in files labelled before it became one."""
    return [tuple(v.split(";")) if isinstance(v, str) and v else () if isinstance(v, str) else tuple(v) for v in values]


def assert_same_labels(now: pd.DataFrame, before: pd.DataFrame) -> None:
    assert len(now) == len(before) > 0
    for column in [*COLUMNS, *(["truncated"] if "truncated" in before.columns else [])]:
        if column == "strategy":
            assert strategy_sets(now[column]) == strategy_sets(before[column]), column
            continue
        assert list(now[column]) == list(before[column]), column
    np.testing.assert_allclose(now[PROBABILITIES].to_numpy(), before[PROBABILITIES].to_numpy(), rtol=0, atol=1e-6)


def test_batch_labelling_with_a_model_saved_by_earlier_code_is_unchanged(tmp_path: Path) -> None:
    model, info = model_from_folder(str(MODEL))
    cfg = LabelConfig(input=DOCUMENTS, output=tmp_path / "labelled.parquet", threads=1)
    result = label_documents(cfg, model, info, read_documents(DOCUMENTS), SegmentConfig(), show_progress=False)
    assert result.exit_code == 0
    assert_same_labels(pd.read_parquet(result.output), pd.read_parquet(REFERENCE / "batch.parquet"))


@pytest.mark.slow
def test_the_pyfunc_of_a_model_saved_by_earlier_code_labels_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    from pipeline import registry, tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_location=tmp_path / "artifacts")
    tracking.configure_tracking(store, "saved-model")
    with mlflow.start_run():
        logged = registry.log_sentence_model(MODEL, "model", SegmentConfig())
    loaded = mlflow.pyfunc.load_model(logged.model_uri)
    documents = pd.read_json(DOCUMENTS, lines=True)[["id", "text"]]
    assert_same_labels(loaded.predict(documents), pd.read_parquet(REFERENCE / "pyfunc_documents.parquet"))
    before = pd.read_parquet(REFERENCE / "pyfunc_sentences.parquet")
    assert_same_labels(loaded.predict(before[["doc_id", "text"]]), before)
