"""The labelled data a run read, as MLflow datasets: each training source (with its weight and size), the dev
set and a frozen evaluation set become inputs of the active run, so the run page says what it learned from.

Part of the MLflow edge (with `pipeline.tracking`, which opens the runs these inputs are logged on).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import mlflow
import pandas as pd

from pipeline.schema import LabelledSentence
from pipeline.training_config import TrainingSource


def sentences_frame(sentences: Sequence[LabelledSentence]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [s.id for s in sentences],
            "doc_id": [s.doc_id for s in sentences],
            "text": [s.text for s in sentences],
            "strategy": [";".join(s.strategy) for s in sentences],
            "commitment": [s.commitment for s in sentences],
        }
    )


def log_dataset(sentences: Sequence[LabelledSentence], name: str, context: str, source: Path | None = None) -> str:
    """Log labelled sentences as an `mlflow.data` input of the active run (`context` is train/dev/eval)."""
    with warnings.catch_warnings():  # a local path "can be interpreted in multiple ways": both are local files
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(
            sentences_frame(sentences),
            source=str(Path(source).resolve()) if source else None,
            name=name,
            targets="commitment",
        )
    mlflow.log_input(dataset, context=context)
    mlflow.set_tag(f"dataset.{context}.mlflow_digest", dataset.digest)
    return dataset.digest


def log_training_sources(sources: Sequence[TrainingSource]) -> None:
    """Log each training source as its own `mlflow.data` input (context `train`), with its weight and size.

    Each source is read again on its own (a second of work for ten thousand sentences), so that what is logged
    is exactly what the source selects.
    """
    from pipeline.labelled_data import check_splits

    for i, source in enumerate(sources):
        chosen = check_splits({"train": [source]})[0]["train"]
        log_dataset(chosen, source.label, "train", source.path)
        mlflow.log_params({f"data.train{i}.weight": source.weight, f"data.train{i}.sentences": len(chosen)})
