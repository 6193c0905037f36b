"""Baseline models: fit on constructed data, identical probabilities after save/load, keyword precedence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from labelled_examples import constructed_sentences

from pipeline.config import BertSpec, KeywordSpec, MajoritySpec, TfidfSpec
from pipeline.labelled_data import sentence_texts
from pipeline.models import load_model
from pipeline.models.base import SentenceModel
from pipeline.models.factory import build_model
from pipeline.models.keyword import KeywordModel, parse_lexicon
from pipeline.models.majority import MajorityModel
from pipeline.models.tfidf import TfidfModel
from pipeline.schema import COMMITMENT_LABELS, STRATEGY_LABELS, SentenceText, with_context

REPO = Path(__file__).resolve().parents[1]
LEXICON = REPO / "configs" / "lexicon.yaml"

# constructed sentences no training example contains verbatim
UNSEEN = [
    SentenceText("Regeringen satsar 12 miljoner kronor på stöd till anhöriga."),
    SentenceText("Ett förslag om hemliga tvångsmedel bereds.", previous="Inledning.", next="Avslutning."),
    SentenceText("Vi delar oron."),
]


def fitted(kind: str) -> SentenceModel:
    sentences = constructed_sentences()
    if kind == "majority":
        return MajorityModel().fit(sentences)
    if kind == "keyword":
        return KeywordModel.from_file(LEXICON).fit(sentences)
    return TfidfModel(min_df=1, C=10.0).fit(sentences[:16], dev=sentences[16:])


@pytest.mark.parametrize("kind", ["majority", "keyword", "tfidf"])
def test_fit_predict_shapes_and_probabilities(kind: str) -> None:
    probs = fitted(kind).predict_proba(UNSEEN)
    assert probs.strategy.shape == (3, len(STRATEGY_LABELS))
    assert probs.commitment.shape == (3, len(COMMITMENT_LABELS))
    assert np.allclose(probs.commitment.sum(axis=1), 1.0)
    assert ((probs.strategy >= 0) & (probs.strategy <= 1)).all()
    assert probs.strategy_thresholds.shape == (len(STRATEGY_LABELS),)
    assert fitted(kind).predict_proba([]).commitment.shape == (0, len(COMMITMENT_LABELS))


@pytest.mark.parametrize("kind", ["majority", "keyword", "tfidf"])
def test_save_load_round_trip_gives_identical_probabilities(kind: str, tmp_path: Path) -> None:
    model = fitted(kind)
    model.save(tmp_path / kind)
    restored = load_model(tmp_path / kind)
    assert type(restored) is type(model) and restored.kind == kind
    before, after = model.predict_proba(UNSEEN), restored.predict_proba(UNSEEN)
    np.testing.assert_array_equal(before.strategy, after.strategy)
    np.testing.assert_array_equal(before.commitment, after.commitment)
    np.testing.assert_array_equal(before.strategy_thresholds, after.strategy_thresholds)


def test_unfitted_models_say_so() -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        TfidfModel().predict_proba(UNSEEN)


def test_majority_predicts_the_most_frequent_type() -> None:
    probs = fitted("majority").predict_proba(UNSEEN)
    assert probs.commitment_labels() == ["none"] * 3
    assert probs.commitment[0, COMMITMENT_LABELS.index("none")] == pytest.approx(8 / 24)
    assert probs.strategy_labels() == [[], [], []]


def test_tfidf_learns_the_training_data_and_tunes_thresholds_on_dev() -> None:
    sentences = constructed_sentences()
    model = TfidfModel(min_df=1, C=50.0, class_weight=None).fit(sentences)
    probs = model.predict_proba(sentence_texts(sentences))
    assert probs.commitment_labels() == [s.commitment for s in sentences]
    assert model.strategy_thresholds_.tolist() == [0.5, 0.5, 0.5]  # no dev given

    tuned = TfidfModel(min_df=1, C=10.0).fit(sentences[:16], dev=sentences[16:])
    assert tuned.strategy_thresholds_.tolist() != [0.5, 0.5, 0.5]
    assert ((tuned.strategy_thresholds_ > 0) & (tuned.strategy_thresholds_ < 1)).all()


def test_tfidf_can_tune_thresholds_out_of_fold_without_dev(tmp_path: Path) -> None:
    sentences = constructed_sentences()
    model = TfidfModel(min_df=1, C=10.0, threshold_folds=3).fit(sentences)
    assert model.strategy_thresholds_.tolist() != [0.5, 0.5, 0.5]
    # same folds, same data: the thresholds are reproducible and survive save/load
    again = TfidfModel(min_df=1, C=10.0, threshold_folds=3).fit(sentences[::-1])
    np.testing.assert_array_equal(model.strategy_thresholds_, again.strategy_thresholds_)
    model.save(tmp_path / "m")
    np.testing.assert_array_equal(load_model(tmp_path / "m").predict_proba(UNSEEN).strategy_thresholds,
                                  model.strategy_thresholds_)  # fmt: skip


def test_tfidf_with_context_reads_the_neighbours() -> None:
    sentences = constructed_sentences()
    model = TfidfModel(min_df=1, context=True).fit(sentences)
    alone = model.predict_proba([SentenceText("Det gäller alla.")])
    around = model.predict_proba(
        [SentenceText("Det gäller alla.", previous="Anslaget höjs med miljoner kronor.", next="Medel tillförs.")]
    )
    assert not np.allclose(alone.commitment, around.commitment)


def test_with_context_gives_every_sentence_its_whole_document() -> None:
    texts = with_context([("a", "Ett."), ("a", "Två."), ("b", "Tre."), ("a", "Fyra.")])
    assert [t.document for t in texts] == ["Ett. Två. Fyra.", "Ett. Två. Fyra.", "Tre.", "Ett. Två. Fyra."]
    assert texts[0].document is texts[1].document  # one string per document, not one per sentence


@pytest.mark.parametrize("gated", [False, True])
def test_tfidf_with_document_context_reads_the_document(gated: bool, tmp_path: Path) -> None:
    """The same sentence reads differently in a bill and in a speech; without its document it reads as a
    document of one sentence; the document bag survives save and load."""
    sentences = constructed_sentences()
    weights = {"gated_document_weight": 1.0} if gated else {"document_weight": 1.0}
    model = TfidfModel(min_df=1, tune_thresholds=False, **weights).fit(sentences)
    sentence = "Det gäller alla."
    in_bill = SentenceText(sentence, document=f"Lagrådsremiss. Förslaget om hemliga tvångsmedel bereds. {sentence}")
    in_speech = SentenceText(sentence, document=f"Tack för ordet. {sentence} Vi delar oron.")
    probs = model.predict_proba([in_bill, in_speech, SentenceText(sentence)])
    head = probs.strategy if gated else probs.commitment
    assert not np.allclose(head[0], head[1])
    if gated:  # the commitment head does not read the gated bag
        np.testing.assert_array_equal(probs.commitment[0], probs.commitment[1])
    model.save(tmp_path / "m")
    again = load_model(tmp_path / "m").predict_proba([in_bill, in_speech, SentenceText(sentence)])
    np.testing.assert_array_equal(again.strategy, probs.strategy)
    np.testing.assert_array_equal(again.commitment, probs.commitment)


MINI_LEXICON = {
    "strategy": {"forebygga": ["förebygg"], "forhindra": ["förhindra"], "forsvara": ["försvåra"]},
    "commitment": {
        "funding": ["kronor"],
        "pending_proposal": ["utredning"],
        "support": ["stöd till"],
        "institution": ["myndighet"],
    },
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("En myndighet får stöd till en utredning om 5 miljoner kronor.", "funding"),
        ("En myndighet ger stöd till en utredning.", "pending_proposal"),
        ("En myndighet ger stöd till kommunerna.", "support"),
        ("En myndighet har bildats.", "institution"),
        ("Vi står enade.", "none"),
    ],
)
def test_keyword_commitment_follows_the_precedence_rule(text: str, expected: str) -> None:
    model = KeywordModel(MINI_LEXICON).fit(constructed_sentences())
    probs = model.predict_proba([SentenceText(text)])
    assert probs.commitment_labels() == [expected]


def test_keyword_strategy_is_multi_label_and_the_shipped_lexicon_behaves() -> None:
    mini = KeywordModel(MINI_LEXICON).fit(constructed_sentences())
    assert mini.predict_proba([SentenceText("Vi ska förebygga och försvåra.")]).strategy_labels() == [
        ["forebygga", "forsvara"]
    ]
    shipped = KeywordModel.from_spec(KeywordSpec(lexicon=LEXICON)).fit(constructed_sentences())
    probs = shipped.predict_proba(
        [
            SentenceText("Terroristfinansiering ska bekämpas."),  # a topic, not money for a measure
            SentenceText("Regeringen tillför 30 miljoner kronor."),
        ]
    )
    assert probs.commitment_labels() == ["none", "funding"]
    assert probs.strategy_labels()[0] == ["forhindra"]


def test_bad_lexicons_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="unknown label"):
        parse_lexicon({"strategy": {"skydda": ["x"]}})
    with pytest.raises(ValueError, match="bad regex"):
        parse_lexicon({"commitment": {"funding": ["(kronor"]}})
    with pytest.raises(ValueError, match="unknown section"):
        parse_lexicon({"commitments": {}})
    with pytest.raises(FileNotFoundError, match="lexicon not found"):
        KeywordModel.from_file("configs/no-such-lexicon.yaml")


def test_build_model_maps_every_baseline_spec() -> None:
    assert isinstance(build_model(MajoritySpec()), MajorityModel)
    assert isinstance(build_model(KeywordSpec(lexicon=LEXICON)), KeywordModel)
    tfidf = build_model(TfidfSpec(C=2.0, word_ngrams=(1, 1)))
    assert isinstance(tfidf, TfidfModel) and tfidf.C == 2.0 and tfidf.word_ngrams == (1, 1)
    for spec in (MajoritySpec(), KeywordSpec(lexicon=LEXICON), TfidfSpec()):
        assert isinstance(build_model(spec), SentenceModel)


def test_build_model_hands_bert_specs_to_the_bert_module() -> None:
    bert = pytest.importorskip("pipeline.models.bert")
    model = build_model(BertSpec(backbone="no-such-folder-needed-until-fit"))
    assert isinstance(model, bert.BertTwoHeadModel)
