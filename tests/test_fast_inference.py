"""The stored fast inference path: ONNX graphs built and checked once, read by the label stage, float32 fallback.

Real parts: a micro BERT trained here (mean pooling and the context segment, so every graph input is used),
real ONNX export, ONNX Runtime sessions and the real label stage.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config import BertSpec, LabelConfig, SegmentConfig, TokenizerConfig
from pipeline.label import label_documents, model_from_folder
from pipeline.models.agreement import (
    INFERENCE_CARD,
    head_agreement,
    read_card,
)
from pipeline.models.onnx_runtime import ONNX_DIR, fused_operators
from pipeline.schema import Document
from tests.labelled_examples import constructed_sentences

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A micro BERT (2 layers, 32 wide), both heads fitted briefly, saved and prepared with its dev sentences."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from pipeline.models.bert import BertTwoHeadModel
    from pipeline.models.mlm_corpus import train_tokenizer

    root = tmp_path_factory.mktemp("fast")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(s.text for s in constructed_sentences()) * 3, encoding="utf-8")
    tokenizer = train_tokenizer([corpus], TokenizerConfig(vocab_size=300, min_frequency=1), root / "backbone")
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(root / "backbone")
    spec = BertSpec(
        backbone=str(root / "backbone"), max_length=32, epochs=2, batch_size=8, threads=1, seed=3,
        pooling="mean", context=True,
    )  # fmt: skip
    sentences = constructed_sentences()
    model = BertTwoHeadModel(spec).fit(sentences)
    model.save(root / "model")
    cards = model.prepare_inference(root / "model", sentences)
    assert len(cards) == 1
    return root / "model"


def documents() -> list[Document]:
    by_doc: dict[str, list[str]] = {}
    for s in constructed_sentences():
        by_doc.setdefault(s.doc_id, []).append(s.text)
    return [Document(id=doc_id, text="\n".join(texts)) for doc_id, texts in by_doc.items()]


def label(folder: Path, out: Path, quantize: str = "auto") -> tuple[pd.DataFrame, str]:
    model, info = model_from_folder(str(folder))
    cfg = LabelConfig(output=out, threads=1, quantize=quantize)
    result = label_documents(cfg, model, info, documents(), SegmentConfig(), show_progress=False)
    return pd.read_parquet(out), result.precision


def test_the_card_records_per_head_agreement_and_keeps_only_the_chosen_graph(bert_dir: Path) -> None:
    card = read_card(bert_dir)
    assert card is not None and card["tolerance"] == 0.02
    assert card["fused_operators"].get("Attention") == 2  # one fused attention kernel per layer
    fp32 = card["paths"]["onnx-fp32"]
    assert fp32["passed"] and fp32["commitment_changed"] == 0.0 and fp32["strategy_changed"] == 0.0
    int8 = card["paths"]["onnx-int8"]
    assert int8["passed"] == (max(int8["commitment_changed"], int8["strategy_changed"]) <= 0.02)
    chosen = card["default"]
    assert chosen == ("onnx-int8" if int8["passed"] else "onnx-fp32")
    graphs = sorted(p.name for p in (bert_dir / ONNX_DIR).iterdir())
    assert graphs == [card["paths"][chosen]["graph"].split("/")[-1]]
    assert fused_operators(bert_dir / card["paths"][chosen]["graph"])


def test_labelling_runs_the_stored_path_by_default_with_labels_as_float32(bert_dir: Path, tmp_path: Path) -> None:
    fast, precision = label(bert_dir, tmp_path / "auto.parquet")
    slow, slow_precision = label(bert_dir, tmp_path / "fp32.parquet", quantize="none")
    card = read_card(bert_dir)
    assert precision == card["default"] != "float32" and slow_precision == "float32"
    assert list(fast.text) == list(slow.text)
    assert (fast.truncated == slow.truncated).all()
    strategy_differs = [tuple(a) != tuple(b) for a, b in zip(fast.strategy, slow.strategy, strict=True)]
    changed = ((fast.commitment != slow.commitment).to_numpy() | np.array(strategy_differs)).mean()
    stored = card["paths"][precision]
    assert changed <= max(stored["commitment_changed"], stored["strategy_changed"]) + 0.1
    if precision == "onnx-fp32":
        assert np.allclose(fast.filter(like="p_").to_numpy(), slow.filter(like="p_").to_numpy(), atol=1e-4)


def test_the_onnx_path_frees_the_torch_weights_and_loads_them_again_when_needed(bert_dir: Path, tmp_path: Path) -> None:
    model, info = model_from_folder(str(bert_dir))
    documents_ = documents()
    cfg = LabelConfig(output=tmp_path / "auto.parquet", threads=1)
    result = label_documents(cfg, model, info, documents_, SegmentConfig(), show_progress=False)
    assert result.precision != "float32" and not model.weights_loaded  # only the ONNX graph is in memory
    assert result.timings["tokenise"] > 0 and result.timings["infer"] > 0
    model.save(tmp_path / "saved")  # saving needs the weights: read again from the folder
    assert model.weights_loaded
    reloaded, _ = model_from_folder(str(tmp_path / "saved"))
    cfg = LabelConfig(output=tmp_path / "fp32.parquet", threads=1, quantize="none")
    again = label_documents(cfg, reloaded, info, documents_, SegmentConfig(), show_progress=False)
    assert again.precision == "float32" and reloaded.weights_loaded
    fast, slow = pd.read_parquet(result.output), pd.read_parquet(again.output)
    assert list(fast.text) == list(slow.text)


def _copy_model(bert_dir: Path, target: Path) -> Path:
    import shutil

    return Path(shutil.copytree(bert_dir, target))


def test_a_missing_graph_or_card_falls_back_to_float32_with_one_notice(
    bert_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    no_graph = _copy_model(bert_dir, tmp_path / "no-graph")
    for graph in (no_graph / ONNX_DIR).iterdir():
        graph.write_bytes(b"not an onnx graph")
    no_card = _copy_model(bert_dir, tmp_path / "no-card")
    (no_card / INFERENCE_CARD).unlink()
    failed = _copy_model(bert_dir, tmp_path / "failed")
    card = json.loads((failed / INFERENCE_CARD).read_text())
    card["default"] = "float32"
    for path in card["paths"].values():
        path["passed"] = False
    (failed / INFERENCE_CARD).write_text(json.dumps(card))
    for folder, reason in (
        (no_graph, "ONNX Runtime cannot load it"),
        (no_card, f"has no {INFERENCE_CARD}"),
        (failed, "no path passed the stored agreement check"),
    ):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="pipeline.models.bert"):
            rows, precision = label(folder, tmp_path / f"{folder.name}.parquet")
        assert precision == "float32" and len(rows) == len(constructed_sentences())
        notices = [r.getMessage() for r in caplog.records if r.name == "pipeline.models.bert"]
        assert len(notices) == 1 and reason in notices[0] and "\n" not in notices[0]


def test_head_agreement_counts_each_head_on_its_own_rule() -> None:
    from pipeline.schema import HeadProbabilities

    thresholds = np.array([0.5, 0.5, 0.5])
    a = HeadProbabilities(
        np.array([[0.6, 0.1, 0.1], [0.2, 0.2, 0.2]]),
        np.array([[0.9, 0.1, 0, 0, 0], [0.1, 0.9, 0, 0, 0]]),
        thresholds,
    )
    b = HeadProbabilities(
        np.array([[0.4, 0.1, 0.1], [0.2, 0.2, 0.2]]),
        np.array([[0.9, 0.1, 0, 0, 0], [0.1, 0.9, 0, 0, 0]]),
        thresholds,
    )
    agreement = head_agreement(a, b)
    assert (agreement.sentences, agreement.commitment_changed, agreement.strategy_changed) == (2, 0.0, 0.5)
    assert not agreement.passes(0.02) and agreement.passes(0.5)
