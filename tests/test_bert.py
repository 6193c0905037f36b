"""The two-head BERT model end to end on a micro backbone pretrained here, in seconds.

Every sentence below is constructed for the tests from templates; none comes from a corpus.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from fresh_process import predict_in_fresh_process
from hypothesis import assume, given
from hypothesis import strategies as st
from micro_bert import constructed_labelled
from transformers import AutoModel

from pipeline.config import BertSpec
from pipeline.models import load_model
from pipeline.models.base import SentenceModel, write_model_json
from pipeline.models.bert import BertTwoHeadModel
from pipeline.models.bert_inputs import encode_sentences, token_budget_batches
from pipeline.models.bert_training import head_scores
from pipeline.models.two_head import TwoHeadModel
from pipeline.models.windows import SentenceWindows, sentence_windows, window_starts
from pipeline.schema import COMMITMENT_LABELS, SentenceText

pytestmark = pytest.mark.slow  # real fine-tuning of a micro BERT

TRAIN = constructed_labelled(30, seed=1, prefix="train")
DEV = constructed_labelled(8, seed=2, prefix="dev")


@pytest.fixture(scope="module")
def backbone(micro_backbone: Path) -> Path:
    """The session's micro BERT (tests/conftest.py), pretrained once for every BERT and ensemble test."""
    return micro_backbone


def micro_spec(backbone: Path, **changes: object) -> BertSpec:
    values: dict = {
        "backbone": str(backbone),
        "context": True,
        "pooling": "mean",
        "max_length": 64,
        "epochs": 6,
        "batch_size": 16,
        "learning_rate": 2e-3,
        "warmup_fraction": 0.1,
        "early_stopping_patience": 10,
        "threads": 1,
        "seed": 7,
    }
    values.update(changes)
    return BertSpec(**values)


@pytest.fixture(scope="module")
def fitted(backbone: Path) -> tuple[BertTwoHeadModel, list[tuple[int, dict[str, float]]]]:
    epochs: list[tuple[int, dict[str, float]]] = []
    model = BertTwoHeadModel.from_spec(micro_spec(backbone)).fit(
        TRAIN, DEV, callbacks=[lambda e, m: epochs.append((e, m))]
    )
    return model, epochs


def dev_inputs() -> list[SentenceText]:
    from pipeline.labelled_data import sentence_texts

    return sentence_texts(DEV)  # DEV is built in document order


def test_fit_learns_the_constructed_cues(fitted: tuple[BertTwoHeadModel, list]) -> None:
    model, epochs = fitted
    assert isinstance(model, SentenceModel) and model.kind == "bert"
    assert [e for e, _ in epochs] == [1, 2, 3, 4, 5, 6]
    assert {"train_loss", "dev_commitment_macro_f1", "dev_strategy_macro_f1", "dev_mean_macro_f1"} <= epochs[0][
        1
    ].keys()
    probs = model.predict_proba(dev_inputs())
    assert probs.commitment.shape == (len(DEV), 5) and probs.strategy.shape == (len(DEV), 3)
    np.testing.assert_allclose(probs.commitment.sum(axis=1), 1.0, atol=1e-5)
    scores = head_scores(probs, DEV)
    # Chance is about 0.2 (commitment) and 0.3 (strategy); the cue words make both learnable.
    assert scores["commitment_macro_f1"] > 0.6
    assert scores["strategy_macro_f1"] > 0.5
    best = max(m["dev_mean_macro_f1"] for _, m in epochs)
    assert (scores["commitment_macro_f1"] + scores["strategy_macro_f1"]) / 2 == pytest.approx(best, abs=1e-9)


def test_saved_model_reloads_in_a_fresh_process_with_identical_predictions(
    fitted: tuple[BertTwoHeadModel, list], tmp_path: Path
) -> None:
    model, _ = fitted
    folder = tmp_path / "model"
    model.save(folder)
    card = json.loads((folder / "model.json").read_text())
    assert card["kind"] == "bert" and card["spec"]["context"] is True and len(card["strategy_thresholds"]) == 3
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    network = AutoModel.from_pretrained(str(folder))  # a transformers model (pipeline.models.two_head registers it)
    assert isinstance(network, TwoHeadModel) and network.encoder.config.hidden_size == 32
    assert network.config.strategy_thresholds == card["strategy_thresholds"]

    inputs = dev_inputs()
    fresh = predict_in_fresh_process(folder, inputs, tmp_path)
    here = model.predict_proba(inputs)
    np.testing.assert_allclose(fresh["commitment"], here.commitment, rtol=0, atol=1e-6)
    np.testing.assert_allclose(fresh["strategy"], here.strategy, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(fresh["thresholds"], here.strategy_thresholds)
    reloaded = load_model(folder).predict_proba(inputs)
    assert reloaded.commitment_labels() == here.commitment_labels()
    assert reloaded.strategy_labels() == here.strategy_labels()


def write_old_layout(model: BertTwoHeadModel, folder: Path) -> None:
    """The folder layout the model was saved in before it became a transformers model (built here by hand)."""
    from safetensors.torch import save_file

    network = model.network_
    network.encoder.save_pretrained(str(folder / "encoder"))
    model.tokenizer.save_pretrained(str(folder / "encoder"))
    heads = {
        f"{name}.{k}": v for name in ("commitment", "strategy") for k, v in getattr(network, name).state_dict().items()
    }
    save_file({k: v.detach().cpu().contiguous() for k, v in heads.items()}, str(folder / "heads.safetensors"))
    write_model_json(
        folder,
        "bert",
        spec=model.spec.model_dump(mode="json"),
        strategy_thresholds=model.strategy_thresholds_.tolist(),
        max_length=model.max_length_,
        encoder="encoder",
        heads="heads.safetensors",
        history=model.history_,
    )


def test_a_model_saved_in_the_old_layout_loads_and_labels_identically(
    fitted: tuple[BertTwoHeadModel, list], tmp_path: Path
) -> None:
    model, _ = fitted
    write_old_layout(model, tmp_path / "old")
    inputs = [SentenceText("Regeringen avsätter medel. " * 40), *dev_inputs()]
    here = model.predict_proba(inputs)
    old = load_model(tmp_path / "old")
    from_old = old.predict_proba(inputs)
    old.save(tmp_path / "new")  # converting: load the old folder, save the new one
    assert not (tmp_path / "new" / "heads.safetensors").exists()
    from_new = load_model(tmp_path / "new").predict_proba(inputs)
    for probabilities in (from_old, from_new):
        np.testing.assert_allclose(probabilities.commitment, here.commitment, rtol=0, atol=1e-6)
        np.testing.assert_allclose(probabilities.strategy, here.strategy, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(probabilities.strategy_thresholds, here.strategy_thresholds)
        np.testing.assert_array_equal(probabilities.truncated, here.truncated)
    assert not here.truncated.any()  # the long first sentence is read whole, in windows


def test_predictions_do_not_depend_on_order_or_batch_size(fitted: tuple[BertTwoHeadModel, list]) -> None:
    model, _ = fitted
    inputs = dev_inputs()
    reference = model.predict_proba(inputs)
    permutation = np.random.default_rng(0).permutation(len(inputs))
    shuffled = model.predict_proba([inputs[i] for i in permutation], max_tokens_per_batch=40)
    np.testing.assert_allclose(shuffled.commitment, reference.commitment[permutation], atol=1e-5)
    np.testing.assert_allclose(shuffled.strategy, reference.strategy[permutation], atol=1e-5)
    assert model.predict_proba([]).commitment.shape == (0, 5)


def test_context_is_segment_b_and_mean_pooling_reads_the_sentence_only(
    fitted: tuple[BertTwoHeadModel, list],
) -> None:
    model, _ = fitted
    tokenizer = model.tokenizer
    [alone] = encode_sentences(tokenizer, [SentenceText("Myndigheten samordnar.")], context=False, max_length=64)
    [framed] = encode_sentences(
        tokenizer,
        [SentenceText("Myndigheten samordnar.", "Hotet är allvarligt.", "")],
        context=True,
        max_length=64,
    )
    assert set(alone.token_type_ids) == {0}
    n = len(alone.input_ids)
    assert framed.input_ids[:n] == alone.input_ids  # [CLS] sentence [SEP] comes first, unchanged
    assert set(framed.token_type_ids[:n]) == {0} and set(framed.token_type_ids[n:]) == {1}
    assert sum(framed.sentence_mask) == n - 2  # the sentence's own tokens, no specials, no context


def test_inputs_are_the_tokenizers_own_pair_encoding_from_one_tokenisation(
    fitted: tuple[BertTwoHeadModel, list],
) -> None:
    """Put together from each string's tokens once, the inputs are what the tokenizer makes of the pair."""
    model, _ = fitted
    tokenizer = model.tokenizer
    inputs = [
        SentenceText("Myndigheten samordnar arbetet.", "Hotet är allvarligt.", "Anhöriga kan få stöd."),
        SentenceText("Anhöriga kan få stöd.", "Myndigheten samordnar arbetet.", ""),
        SentenceText("Hotet är allvarligt.", "", " ".join(["Regeringen avsätter medel."] * 20)),
    ]
    encoded = encode_sentences(tokenizer, inputs, True, 24)
    around = [f"{s.previous} {tokenizer.sep_token} {s.next}".strip() for s in inputs]
    reference = tokenizer([s.text for s in inputs], around, truncation="only_second", max_length=24)
    for i, e in enumerate(encoded):
        assert e.input_ids == reference["input_ids"][i]
        assert e.sentence_mask == [1 if q == 0 else 0 for q in reference.sequence_ids(i)]
        assert e.sentence_tokens == tokenizer(inputs[i].text, add_special_tokens=False)["input_ids"]
        assert not e.cut
    [alone] = encode_sentences(tokenizer, inputs[:1], False, 6)
    assert alone.input_ids == tokenizer(inputs[0].text, truncation=True, max_length=6)["input_ids"]
    assert alone.cut and len(alone.sentence_tokens) > sum(alone.sentence_mask)


def test_long_neighbours_give_way_and_only_a_sentence_too_long_alone_is_cut(
    fitted: tuple[BertTwoHeadModel, list],
) -> None:
    model, _ = fitted
    tokenizer = model.tokenizer
    sentence = "Myndigheten samordnar arbetet med kommunerna och regionerna."
    own = len(tokenizer(sentence, add_special_tokens=False)["input_ids"])
    chatter = " ".join(["Hotet är allvarligt och arbetet fortsätter."] * 40)
    max_length = own + 8
    [framed] = encode_sentences(tokenizer, [SentenceText(sentence, chatter, chatter)], True, max_length)
    assert len(framed.input_ids) == max_length and sum(framed.sentence_mask) == own  # context cut, sentence whole
    [long] = encode_sentences(tokenizer, [SentenceText(chatter, sentence, "")], True, max_length)
    assert len(long.input_ids) <= max_length and sum(long.sentence_mask) < len(tokenizer(chatter)["input_ids"])


def test_a_sentence_longer_than_the_model_is_read_whole_in_windows(fitted: tuple[BertTwoHeadModel, list]) -> None:
    """Issue 14: real sentences (lists of laws, EU titles) outrun max_length; the model reads all of them."""
    model, _ = fitted
    tokenizer, max_length = model.tokenizer, model.max_length_
    long_sentence = (
        "Regeringen avsätter 40 miljoner kronor till "
        + ", ".join(["skyddet av offentliga platser och kontrollen av sprängämnen"] * 16)
        + " och en särskild utredare ska föreslå hur säkerhetsskyddet på flygplatser kan skärpas."
    )
    own = tokenizer(long_sentence, add_special_tokens=False)["input_ids"]
    assert len(own) > 2 * max_length
    inputs = [
        SentenceText("Hotet är allvarligt.", "", long_sentence),
        SentenceText(long_sentence, "Hotet är allvarligt.", "Anhöriga kan få stöd."),
        SentenceText("Anhöriga kan få stöd.", long_sentence, ""),
    ]
    encoded = encode_sentences(tokenizer, inputs, True, max_length)
    windows = sentence_windows(encoded)
    assert windows.owner.tolist().count(0) == 1 and windows.owner.tolist().count(2) == 1
    assert windows.rows[0] is encoded[0] and windows.rows[-1] is encoded[2]  # sentences that fit: as before
    long_rows = [row for row, owner in zip(windows.rows, windows.owner, strict=True) if owner == 1]
    width = sum(encoded[1].sentence_mask)  # as many of its tokens as the cut input held
    starts = window_starts(len(own), width)
    assert len(long_rows) == len(starts) >= 4
    a = encoded[1].sentence_mask.index(1)
    for start, row in zip(starts, long_rows, strict=True):
        assert len(row.input_ids) == len(encoded[1].input_ids) <= max_length
        assert [t for t, m in zip(row.input_ids, row.sentence_mask, strict=True) if m] == own[start : start + width]
        assert row.input_ids[:a] == encoded[1].input_ids[:a]  # [CLS] and the closing [SEP]s as the cut input's
        assert row.input_ids[a + width :] == encoded[1].input_ids[a + width :]
    assert set().union(*(range(s, s + width) for s in starts)) == set(range(len(own)))  # every token read

    probabilities = model.predict_proba(inputs)
    assert not probabilities.truncated.any()
    per_row = model._run(model.network_, windows.rows, 10_000)
    strategy, commitment = windows.combine(*per_row)
    np.testing.assert_allclose(probabilities.strategy, strategy, atol=1e-6)
    np.testing.assert_allclose(probabilities.commitment, commitment, atol=1e-6)
    alone = model.predict_proba([inputs[0], inputs[2]])  # the short ones: not touched by their long neighbour
    np.testing.assert_allclose(probabilities.commitment[[0, 2]], alone.commitment, atol=1e-5)


def test_windows_combine_as_the_label_scheme_reads_a_sentence() -> None:
    """Every strategy any part belongs to; a commitment type when any part reports one (`none` only if all)."""
    none = COMMITMENT_LABELS.index("none")
    funding = COMMITMENT_LABELS.index("funding")
    windows = SentenceWindows(rows=[None] * 4, owner=np.array([0, 1, 1, 2]), sentences=3)  # type: ignore[list-item]
    strategy = np.array([[0.1, 0.2, 0.3], [0.9, 0.1, 0.2], [0.2, 0.1, 0.8], [0.5, 0.5, 0.5]])
    commitment = np.full((4, 5), 0.05)
    commitment[:, none] = 0.8
    commitment[2, none], commitment[2, funding] = 0.1, 0.75
    out_strategy, out_commitment = windows.combine(strategy, commitment)
    np.testing.assert_array_equal(out_strategy, [[0.1, 0.2, 0.3], [0.9, 0.1, 0.8], [0.5, 0.5, 0.5]])
    np.testing.assert_array_equal(out_commitment[[0, 2]], commitment[[0, 3]])  # one window: untouched
    np.testing.assert_allclose(out_commitment.sum(axis=1), 1.0)
    assert out_commitment[1].argmax() == funding and out_commitment[1, none] == pytest.approx(0.1 / 1.0)


@given(st.integers(1, 400), st.integers(1, 126))
def test_window_starts_cover_every_token_half_a_window_apart(length: int, width: int) -> None:
    assume(width < length)  # windows are made only for a sentence longer than a window
    starts = window_starts(length, width)
    assert starts[0] == 0 and starts[-1] == length - width and starts == sorted(set(starts))
    assert all(0 < b - a <= max(1, width // 2) for a, b in itertools.pairwise(starts))


@given(st.lists(st.integers(1, 60), max_size=80), st.integers(1, 500))
def test_token_budget_batches_cover_every_row_once_within_budget(lengths: list[int], budget: int) -> None:
    batches = token_budget_batches(lengths, budget)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= budget


def test_focal_loss_cls_pooling_and_accumulation_train_without_dev(backbone: Path) -> None:
    spec = micro_spec(
        backbone,
        context=False,
        pooling="cls",
        commitment_loss="focal",
        gradient_accumulation=2,
        epochs=2,
        layerwise_lr_decay=0.8,
        head_learning_rate=3e-3,
        validation_fraction=0.0,
    )
    model = BertTwoHeadModel.from_spec(spec).fit(TRAIN[:40])
    assert len(model.history_) == 2 and "dev_mean_macro_f1" not in model.history_[0]
    np.testing.assert_array_equal(model.strategy_thresholds_, [0.5, 0.5, 0.5])
    assert np.isfinite(model.predict_proba(dev_inputs()[:5]).strategy).all()


def test_without_dev_the_epoch_is_picked_on_held_out_training_documents(backbone: Path) -> None:
    spec = micro_spec(backbone, epochs=2, validation_fraction=0.25)
    model = BertTwoHeadModel.from_spec(spec).fit(TRAIN)
    assert all("dev_mean_macro_f1" in epoch for epoch in model.history_)  # scored on the held-out slice


def test_clear_errors(backbone: Path, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        BertTwoHeadModel.from_spec(micro_spec(backbone)).predict_proba([SentenceText("Text.")])
    with pytest.raises(FileNotFoundError, match="no such folder"):
        BertTwoHeadModel.from_spec(micro_spec(tmp_path / "nowhere" / "backbone")).fit(TRAIN[:5])
    write_model_json(tmp_path / "other", "tfidf")
    with pytest.raises(ValueError, match="kind is 'tfidf'"):
        BertTwoHeadModel.load(tmp_path / "other")
    with pytest.raises(ValueError, match="no training sentences"):
        BertTwoHeadModel.from_spec(micro_spec(backbone)).fit([])
