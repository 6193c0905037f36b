"""Masked-LM pretraining on constructed Swedish text: tokenizer, packing, split, training, resume.

All text here is constructed for the tests (template sentences), not taken from any corpus.
"""

from __future__ import annotations

import gzip
import json
import math
import random
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForMaskedLM, AutoTokenizer, BertModel

from pipeline.config import BackboneSize, PretrainConfig, TokenizerConfig
from pipeline.models.backbone import load_encoder
from pipeline.models.mlm_corpus import heldout_blocks, is_heldout, iter_blocks, iter_corpus_texts, train_tokenizer
from pipeline.models.pretrain import latest_checkpoint, pretrain_backbone

pytestmark = pytest.mark.slow  # real tokenizer training and masked-LM pretraining

# Constructed sentence parts: the grammar is trivial, but the vocabulary is Swedish and cased.
SUBJECTS = ["Regeringen", "Polisen", "Kommunen", "Myndigheten", "Säkerhetspolisen", "Skolan", "Länsstyrelsen"]
VERBS = ["satsar på", "utreder", "stödjer", "inrättar", "förebygger", "granskar", "förstärker"]
OBJECTS = [
    "arbetet mot extremism",
    "anhöriga",
    "ett nytt center",
    "skyddet av offentliga platser",
    "kontrollen av sprängämnen",
    "utbildning för lärare",
    "informationsutbytet",
]


def constructed_documents(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(
            f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}." for _ in range(rng.randint(3, 12))
        )
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "constructed.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for i, text in enumerate(constructed_documents(240)):
            handle.write(json.dumps({"id": f"doc{i}", "text": text}, ensure_ascii=False) + "\n")
    return path


def micro_config(corpus: Path, output_dir: Path, **changes: object) -> PretrainConfig:
    values: dict = {
        "corpus": [corpus],
        "output_dir": output_dir,
        "tokenizer": TokenizerConfig(vocab_size=200),
        "size": BackboneSize(layers=2, hidden=32, heads=2, intermediate=64, max_positions=64),
        "block_size": 32,
        "batch_size": 8,
        "learning_rate": 1e-3,
        "max_steps": 40,
        "checkpoint_every": 10,
        "heldout_fraction": 0.2,
        "max_heldout_blocks": 64,
        "shuffle_buffer": 50,
        "log_every": 5,
        "threads": 1,
    }
    values.update(changes)
    return PretrainConfig(**values)


def test_reader_streams_jsonl_gz_and_txt(tmp_path: Path, corpus: Path) -> None:
    txt = tmp_path / "notes.txt"
    txt.write_text("Första stycket\nfortsätter här.\n\nAndra stycket.\n", encoding="utf-8")
    assert list(iter_corpus_texts([txt])) == ["Första stycket fortsätter här.", "Andra stycket."]
    assert len(list(iter_corpus_texts([corpus], max_documents=7))) == 7
    assert len(list(iter_corpus_texts([corpus, txt]))) == 242


def test_reader_names_the_bad_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "Regeringen satsar."}\n{not json}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.jsonl: line 2 is not valid JSON"):
        list(iter_corpus_texts([bad]))
    no_text = tmp_path / "no_text.jsonl"
    no_text.write_text('{"title": "Rubrik"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 1 has no string field `text`"):
        list(iter_corpus_texts([no_text]))
    with pytest.raises(FileNotFoundError, match=r"missing\.jsonl"):
        list(iter_corpus_texts([tmp_path / "missing.jsonl"]))


def test_tokenizer_is_cased_keeps_swedish_letters_and_round_trips(tmp_path: Path, corpus: Path) -> None:
    tokenizer = train_tokenizer([corpus], TokenizerConfig(vocab_size=300), tmp_path / "tok")
    assert len(tokenizer) <= 300
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3, 4]) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens = tokenizer.tokenize("Säkerhetspolisen förstärker")
    assert "".join(t.removeprefix("##") for t in tokens) == "Säkerhetspolisenförstärker"  # no accent stripping
    assert tokenizer.tokenize("Skolan") != tokenizer.tokenize("skolan")  # cased
    pair = tokenizer("Skolan granskar.", "Polisen utreder.", return_token_type_ids=True)
    assert pair["input_ids"][0] == tokenizer.cls_token_id
    assert pair["token_type_ids"][-1] == 1 and pair["token_type_ids"][0] == 0
    reloaded = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert reloaded("Skolan granskar.")["input_ids"] == tokenizer("Skolan granskar.")["input_ids"]


def test_blocks_are_full_framed_and_lose_no_token(tmp_path: Path, corpus: Path) -> None:
    tokenizer = train_tokenizer([corpus], TokenizerConfig(vocab_size=200), tmp_path / "tok")
    texts = list(iter_corpus_texts([corpus], max_documents=30))
    blocks = list(iter_blocks(texts, tokenizer, block_size=16, docs_per_call=7))
    assert all(len(b) == 16 and b[0] == tokenizer.cls_token_id and b[-1] == tokenizer.sep_token_id for b in blocks)
    stream: list[int] = []
    for text in texts:
        stream += tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.sep_token_id]
    bodies = [token for block in blocks for token in block[1:-1]]
    assert bodies == stream[: len(bodies)]
    assert len(stream) - len(bodies) < 14  # only the last partial block is dropped


def test_heldout_split_is_by_document_and_stable(corpus: Path, tmp_path: Path) -> None:
    texts = list(iter_corpus_texts([corpus]))
    held = [t for t in texts if is_heldout(t, 0.2)]
    assert held == [t for t in texts if is_heldout(t, 0.2)]
    assert 0.08 < len(held) / len(texts) < 0.35
    assert not any(is_heldout(t, 0.0) for t in texts)
    cfg = micro_config(corpus, tmp_path / "x", heldout_fraction=0.0)
    tokenizer = train_tokenizer([corpus], TokenizerConfig(vocab_size=200), tmp_path / "tok")
    with pytest.raises(ValueError, match="no held-out block"):
        heldout_blocks(cfg, tokenizer)


def test_pretrain_from_scratch_learns_and_saves_a_standard_folder(tmp_path: Path, corpus: Path) -> None:
    seen: list[tuple[int, dict[str, float]]] = []
    result = pretrain_backbone(micro_config(corpus, tmp_path / "bb"), on_metrics=lambda m, s: seen.append((s, m)))
    assert result.steps == 40 and result.resumed_from_step == 0
    assert result.heldout_loss < math.log(200) - 0.5  # well below a uniform guess over the vocabulary
    assert result.heldout_perplexity == pytest.approx(math.exp(result.heldout_loss))
    assert [s for s, m in seen if "mlm_loss" in m] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert seen[-1][1].keys() == {"heldout_loss", "heldout_perplexity"}
    assert (tmp_path / "bb" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "bb" / "pretrain.json").read_text())["steps"] == 40
    mlm = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "bb"))
    assert mlm.config.num_hidden_layers == 2
    encoder = load_encoder(tmp_path / "bb")
    assert isinstance(encoder, BertModel) and encoder.pooler is None
    assert not any(name.startswith("cls.") for name in encoder.state_dict())


def test_resume_after_a_crash_gives_the_uninterrupted_result(tmp_path: Path, corpus: Path) -> None:
    # WordPiece training breaks frequency ties in hash order, so two trainings can differ; a scratch run
    # reuses the tokenizer already in its output_dir, which lets both runs share one here.
    train_tokenizer([corpus], TokenizerConfig(vocab_size=200), tmp_path / "straight")
    shutil.copytree(tmp_path / "straight", tmp_path / "resumed")
    straight = pretrain_backbone(micro_config(corpus, tmp_path / "straight", max_steps=20))

    def crash_at_15(metrics: dict[str, float], step: int) -> None:
        if step == 15:
            raise KeyboardInterrupt  # the run is killed after the step-10 checkpoint

    with pytest.raises(KeyboardInterrupt):
        pretrain_backbone(micro_config(corpus, tmp_path / "resumed", max_steps=20), on_metrics=crash_at_15)
    assert latest_checkpoint(tmp_path / "resumed").name == "checkpoint-10"
    resumed = pretrain_backbone(micro_config(corpus, tmp_path / "resumed", max_steps=20))
    assert resumed.resumed_from_step == 10 and resumed.steps == 20
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    assert resumed.heldout_loss == pytest.approx(straight.heldout_loss, abs=1e-5)


def test_resume_refuses_a_checkpoint_from_other_settings(tmp_path: Path, corpus: Path) -> None:
    pretrain_backbone(micro_config(corpus, tmp_path / "bb", max_steps=10))
    with pytest.raises(ValueError, match="other corpus/size/batch settings"):
        pretrain_backbone(micro_config(corpus, tmp_path / "bb", max_steps=20, batch_size=4))


def test_continued_pretraining_keeps_the_vocabulary(tmp_path: Path, corpus: Path) -> None:
    base = pretrain_backbone(micro_config(corpus, tmp_path / "base", max_steps=10))
    cont = micro_config(corpus, tmp_path / "adapted", mode="continue", init_from=str(base.output_dir), max_steps=10)
    result = pretrain_backbone(cont)
    assert result.steps == 10 and math.isfinite(result.heldout_loss)
    assert (tmp_path / "adapted" / "tokenizer.json").read_text() == (tmp_path / "base" / "tokenizer.json").read_text()
    unchanged = micro_config(corpus, tmp_path / "step0", mode="continue", init_from=str(base.output_dir), max_steps=0)
    step0 = pretrain_backbone(unchanged)  # no training: the base model scored on the same fixed held-out masks
    assert step0.steps == 0 and step0.heldout_loss == pytest.approx(base.heldout_loss, abs=1e-5)
    with pytest.raises(ValueError, match="init_from: required"):
        pretrain_backbone(micro_config(corpus, tmp_path / "c2", mode="continue"))


def test_a_minutes_budget_stops_early(tmp_path: Path, corpus: Path) -> None:
    result = pretrain_backbone(micro_config(corpus, tmp_path / "bb", max_steps=100_000, max_minutes=0.1))
    assert 0 < result.steps < 100_000
    assert latest_checkpoint(tmp_path / "bb").name == f"checkpoint-{result.steps}"  # the last step is kept


class _RunsCodeWhenUnpickled:
    """A pickle that would create `marker` if unpickled: what a tampered checkpoint could carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("state_file", ["optimizer.pt", "rng_state.pth"])
def test_resume_loads_no_code_from_a_checkpoint(tmp_path: Path, corpus: Path, state_file: str) -> None:
    import pickle

    out = tmp_path / "bb"
    pretrain_backbone(micro_config(corpus, out, max_steps=10))
    checkpoint = latest_checkpoint(out)
    assert not list(checkpoint.glob("*.bin"))  # no pickled training arguments either
    marker = tmp_path / "code-ran"
    torch.save({"state": _RunsCodeWhenUnpickled(marker)}, checkpoint / state_file)  # a tampered state file
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        pretrain_backbone(micro_config(corpus, out, max_steps=20))
    assert not marker.exists()


def test_gradient_accumulation_trains_and_is_part_of_the_stream(tmp_path: Path, corpus: Path) -> None:
    accumulated = micro_config(corpus, tmp_path / "bb", max_steps=10, batch_size=4, gradient_accumulation=2)
    result = pretrain_backbone(accumulated)
    assert result.steps == 10 and math.isfinite(result.heldout_loss)
    assert result.heldout_loss < math.log(200)  # it learns: below a uniform guess over the vocabulary
    with pytest.raises(ValueError, match="other corpus/size/batch settings"):  # the stream changes with it
        pretrain_backbone(micro_config(corpus, tmp_path / "bb", max_steps=20, batch_size=4))
