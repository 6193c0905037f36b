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


def _relabelled(path: Path, out: Path, strategy: list[str]) -> Path:
    """The same sentences with every strategy label replaced (to show a commitment-only source's are unused)."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    out.write_text("".join(json.dumps({**r, "strategy": strategy}) + "\n" for r in rows), encoding="utf-8")
    return out


@pytest.mark.parametrize("members", [None, ["tfidf", "keyword"]])
def test_a_commitment_only_source_teaches_commitment_and_not_strategy(
    files: dict[str, Path], tmp_path: Path, members: list[str] | None
) -> None:
    from pipeline.config import EnsembleSpec, KeywordSpec
    from pipeline.models.factory import build_model

    def fit(strategy: list[str], strategy_weight: float | None) -> object:
        silver = _relabelled(files["silver"], tmp_path / f"s{len(strategy)}.jsonl", strategy)
        sources = [TrainingSource(path=files["gold"]), TrainingSource(path=silver, strategy_weight=strategy_weight)]
        train, _ = read_training_data(sources)
        tfidf = TfidfSpec(min_df=1, threshold_folds=3)
        spec = tfidf if members is None else EnsembleSpec(members=[tfidf, KeywordSpec()], combiner="learned_weights")
        return build_model(spec).fit(train)

    inputs = sentence_texts(constructed_labelled(3, seed=9, prefix="new"))
    every, none = fit(["forebygga", "forhindra", "forsvara"], 0), fit([], 0)
    a, b = every.predict_proba(inputs), none.predict_proba(inputs)  # type: ignore[attr-defined]
    np.testing.assert_allclose(a.strategy, b.strategy)  # the source's strategy labels changed nothing
    np.testing.assert_allclose(a.strategy_thresholds, b.strategy_thresholds)
    np.testing.assert_allclose(a.commitment, b.commitment)
    # with its default strategy weight, the same labels do change the strategy head
    counted = fit(["forebygga", "forhindra", "forsvara"], None).predict_proba(inputs)  # type: ignore[attr-defined]
    assert np.abs(counted.strategy - a.strategy).max() > 0.05


def test_strategy_weights_come_from_the_source(files: dict[str, Path]) -> None:
    sources = [
        TrainingSource(path=files["gold"]),
        TrainingSource(path=files["silver"], where={"source": "adjacent"}, weight=0.5, strategy_weight=0),
    ]
    assert sources[1].label == "silver[source=adjacent,commitment only]"
    train, _ = read_training_data(sources)
    adjacent = np.array([s.doc_id.startswith("far") for s in train])
    np.testing.assert_array_equal(training_weights(train), np.where(adjacent, 0.5, 1.0))
    np.testing.assert_array_equal(training_weights(train, "strategy"), np.where(adjacent, 0.0, 1.0))
    with pytest.raises(ValueError, match="strategy_weight"):
        TrainingSource(path=files["gold"], strategy_weight=-1)


def test_the_bert_loss_ignores_strategy_labels_of_weight_zero() -> None:
    import torch

    from pipeline.models.bert_training import TwoHeadLoss

    torch.manual_seed(0)
    loss = TwoHeadLoss("weighted", 2.0, None, None)
    logits_c, logits_s = torch.randn(4, 5), torch.randn(4, 3)
    c = torch.tensor([0, 1, 2, 3])
    s = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]])
    flipped = s.clone()
    flipped[2:] = 1 - flipped[2:]
    weight, strategy_weight = torch.ones(4), torch.tensor([1.0, 1.0, 0.0, 0.0])
    same = [loss(logits_c, logits_s, c, labels, weight, strategy_weight) for labels in (s, flipped)]
    assert torch.allclose(same[0], same[1])
    assert not torch.allclose(loss(logits_c, logits_s, c, s, weight), loss(logits_c, logits_s, c, flipped, weight))
