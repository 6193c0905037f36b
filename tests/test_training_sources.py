"""Training data as configuration: several labelled sources, each with a filter and a weight.

Every sentence here is constructed for the test (tests/micro_bert.py templates); none comes from a corpus.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from micro_bert import constructed_labelled

from pipeline.config import ConfigError, DataConfig, TfidfSpec, TrainingSource, load_config
from pipeline.labelled_data import (
    LabelledDataError,
    check_splits,
    in_document_order,
    read_training_data,
    sentence_texts,
    training_weights,
)
from pipeline.models.tfidf import TfidfModel


def _write(path: Path, sentences: list, **extra: str) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for s in sentences:
            handle.write(json.dumps({**s.model_dump(exclude_none=True), **extra}, ensure_ascii=False) + "\n")
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    gold = _write(tmp_path / "gold.jsonl", constructed_labelled(6, seed=1, prefix="g"))
    silver = tmp_path / "silver.jsonl"
    near = constructed_labelled(4, seed=2, prefix="near")
    far = constructed_labelled(5, seed=3, prefix="far")
    lines = [
        json.dumps({**s.model_dump(exclude_none=True), "source": src, "annotation": "single"}, ensure_ascii=False)
        for src, group in (("extremism", near), ("adjacent", far))
        for s in group
    ]
    silver.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"gold": gold, "silver": silver}


def test_plain_paths_are_sources_of_weight_one(files: dict[str, Path]) -> None:
    data = DataConfig(train=[str(files["gold"])], dev=files["gold"])
    assert data.train == [TrainingSource(path=files["gold"])]
    train, _ = read_training_data(data.train)
    assert len(train) == 36 and set(training_weights(train)) == {1.0}


def test_a_source_selects_by_field_and_carries_its_weight(files: dict[str, Path]) -> None:
    sources = [
        TrainingSource(path=files["gold"]),
        TrainingSource(path=files["silver"], where={"source": "extremism"}, weight=0.7),
        TrainingSource(path=files["silver"], where={"source": "adjacent"}, weight=0.3),
    ]
    train, _ = read_training_data(sources)
    weights = {s.id: w for s, w in zip(train, training_weights(train), strict=True)}
    assert len(train) == 36 + 24 + 30
    assert {w for i, w in weights.items() if i.startswith("g")} == {1.0}
    assert {w for i, w in weights.items() if i.startswith("near")} == {0.7}
    assert {w for i, w in weights.items() if i.startswith("far")} == {0.3}
    assert sources[2].label == "silver[source=adjacent]"


def test_a_source_that_selects_nothing_or_overlaps_is_refused(files: dict[str, Path]) -> None:
    empty = TrainingSource(path=files["silver"], where={"source": "riksdagen"})
    _, problems = check_splits({"train": [files["gold"], empty]})
    expected = "source 'silver[source=riksdagen]': no sentence has {'source': 'riksdagen'}"
    assert [p.message for p in problems] == [expected]
    whole = TrainingSource(path=files["silver"])
    part = TrainingSource(path=files["silver"], where={"source": "adjacent"})
    with pytest.raises(LabelledDataError, match=r"duplicate id 'far0#0' \(also in .*silver.jsonl, source 'silver'\)"):
        read_training_data([whole, part])


def test_the_config_reads_sources_and_refuses_a_bad_weight(tmp_path: Path, files: dict[str, Path]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        f"data:\n  train:\n    - {files['gold']}\n"
        f"    - {{path: {files['silver']}, where: {{source: adjacent}}, weight: 0.5}}\n"
        f"  dev: {files['gold']}\n",
        encoding="utf-8",
    )
    config = load_config(path)
    assert [s.weight for s in config.data.train] == [1.0, 0.5]
    assert config.data.train_files == [files["gold"], files["silver"]]
    path.write_text(f"data:\n  train:\n    - {{path: {files['gold']}, weight: 0}}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"data\.train\.0\.weight: .*greater than 0"):
        load_config(path)


def test_tfidf_uses_the_weights(files: dict[str, Path]) -> None:
    """Weight 2 on every sentence is, for a regularised logistic regression, the same as twice the C."""
    plain, _ = read_training_data([files["gold"]])
    doubled, _ = read_training_data([TrainingSource(path=files["gold"], weight=2.0)])
    spec = TfidfSpec(min_df=1, C=1.0, strategy_C=1.0, threshold_folds=0, tune_thresholds=False)
    weighted = TfidfModel.from_spec(spec).fit(doubled)
    stronger = TfidfModel.from_spec(spec, C=2.0, strategy_C=2.0).fit(plain)
    unweighted = TfidfModel.from_spec(spec).fit(plain)
    inputs = sentence_texts(in_document_order(plain))
    a, b, c = (m.predict_proba(inputs) for m in (weighted, stronger, unweighted))
    np.testing.assert_allclose(a.commitment, b.commitment, atol=1e-4)
    np.testing.assert_allclose(a.strategy, b.strategy, atol=1e-4)
    assert np.abs(a.commitment - c.commitment).max() > 1e-3
