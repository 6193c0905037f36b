"""TF-IDF word and character n-grams with logistic regression: the strong, fast baseline and an ensemble member.

Saved as a folder: `model.json`, the fitted estimators in skops format, and the vocabularies as one JSON file.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from pipeline.labelled_data import in_document_order, sentence_texts, strategy_labelled, training_weights
from pipeline.models.base import SinglePassModel, check_fitted, read_model_json, write_model_json
from pipeline.schema import (
    COMMITMENT_LABELS,
    STRATEGY_LABELS,
    HeadProbabilities,
    LabelledSentence,
    SentenceText,
    commitment_indices,
    strategy_matrix,
)
from pipeline.training_config import TfidfSpec

_ESTIMATORS_FILE = "estimators.skops"
# skops writes every vocabulary entry as its own array (35,000 files, 38 MB for the default model), so the
# vectorizers' vocabularies travel as one JSON file instead
_VOCABULARY_FILE = "vocabulary.json"
_NO_COMMITMENT = COMMITMENT_LABELS.index("none")


def _once_per_text(encode: Callable[[list[str]], Any], texts: list[str]) -> Any:
    """`encode(texts)`, computed once per distinct text and spread back (every sentence of a document carries
    the same document text, so the document bag is built once per document)."""
    index: dict[str, int] = {}
    inverse = np.fromiter((index.setdefault(t, len(index)) for t in texts), dtype=np.int64, count=len(texts))
    return encode(list(index))[inverse]


class TfidfModel(SinglePassModel):
    """TF-IDF word and character n-grams with logistic regression.

    Strategy: one binary classifier per label (one-vs-rest), with per-label decision thresholds tuned for F1:
    with `threshold_folds=k` on out-of-fold predictions of k document-grouped folds of train (dev untouched),
    otherwise on `dev` when `fit` is given one, otherwise 0.5.
    Commitment: one multinomial classifier. With `context=True` the neighbouring sentences add a separate,
    down-weighted bag of words.
    Document context: `document_weight` > 0 adds the bag of words of the sentence's whole document to both
    heads, so a procedural line in a bill reads differently from the same line in a speech (document type and
    topic). `gated_document_weight` > 0 adds that bag to the strategy head once more, scaled by how likely the
    sentence reports a commitment at all (its gold label in training; 1 - P(none) when labelling): a sentence
    that reports a measure takes its dimension from what the document is about, while rhetoric does not.
    """

    kind = "tfidf"

    def __init__(
        self,
        word_ngrams: tuple[int, int] = (1, 2),
        char_ngrams: tuple[int, int] = (2, 5),
        min_df: int = 2,
        C: float = 4.0,
        class_weight: str | None = "balanced",
        max_features: int | None = 200_000,
        strategy_C: float | None = None,
        context: bool = False,
        context_weight: float = 0.5,
        document_weight: float = 0.0,
        gated_document_weight: float = 0.0,
        tune_thresholds: bool = True,
        threshold_folds: int = 0,
        seed: int = 13,
    ) -> None:
        self.word_ngrams = tuple(word_ngrams)
        self.char_ngrams = tuple(char_ngrams)
        self.min_df = min_df
        self.C = C
        self.class_weight = class_weight
        self.max_features = max_features
        self.strategy_C = strategy_C
        self.context = context
        self.context_weight = context_weight
        self.document_weight = document_weight
        self.gated_document_weight = gated_document_weight
        self.tune_thresholds = tune_thresholds
        self.threshold_folds = threshold_folds
        self.seed = seed

    @classmethod
    def from_spec(cls, spec: TfidfSpec, **overrides: Any) -> TfidfModel:
        params = spec.model_dump(exclude={"kind"})
        params.update(overrides)
        return cls(**params)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's arguments (scikit-learn's estimator convention, so `sklearn.base.clone` works)."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def set_params(self, **params: Any) -> Self:
        for name, value in params.items():
            if name not in self.get_params():
                raise ValueError(f"TfidfModel.set_params: unknown parameter {name!r}")
            setattr(self, name, value)
        return self

    def params(self) -> dict[str, Any]:
        """The constructor's arguments as JSON values (for model.json)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.get_params().items()}

    # features

    def _new_features(self, n_docs: int) -> dict[str, Any]:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.pipeline import FeatureUnion

        # min_df above the number of texts would leave no vocabulary on tiny data sets
        min_df = min(self.min_df, max(1, n_docs // 2))
        text = FeatureUnion(
            [
                (
                    "word",
                    TfidfVectorizer(
                        ngram_range=self.word_ngrams,
                        min_df=min_df,
                        sublinear_tf=True,
                        max_features=self.max_features,
                        token_pattern=r"(?u)\b\w+\b",
                    ),
                ),
                (
                    "char",
                    TfidfVectorizer(
                        analyzer="char_wb",
                        ngram_range=self.char_ngrams,
                        min_df=min_df,
                        sublinear_tf=True,
                        max_features=self.max_features,
                    ),
                ),
            ]
        )
        features: dict[str, Any] = {"text": text}
        if self.context:
            features["context"] = TfidfVectorizer(
                ngram_range=(1, 1), min_df=min_df, sublinear_tf=True, token_pattern=r"(?u)\b\w+\b"
            )
        if self.reads_document:
            features["document"] = TfidfVectorizer(
                ngram_range=(1, 1),
                min_df=min_df,
                sublinear_tf=True,
                max_features=50_000,
                token_pattern=r"(?u)\b\w+\b",
            )
        return features

    @property
    def reads_document(self) -> bool:
        return self.document_weight > 0 or self.gated_document_weight > 0

    def _transform(self, sentences: Sequence[SentenceText], fit: bool = False) -> tuple[Any, Any]:
        """(features of both heads, the document bag alone or None)."""
        from scipy import sparse

        def block(name: str, texts: list[str]) -> Any:
            vectorizer = self.features_[name]
            return vectorizer.fit_transform(texts) if fit else vectorizer.transform(texts)

        blocks = [block("text", [s.text for s in sentences])]
        if "context" in self.features_:
            blocks.append(block("context", [f"{s.previous} {s.next}" for s in sentences]) * self.context_weight)
        document = None
        if "document" in self.features_:
            # a sentence given without its document reads as a document of one sentence
            document = _once_per_text(lambda texts: block("document", texts), [s.document or s.text for s in sentences])
            if self.document_weight > 0:
                blocks.append(document * self.document_weight)
        return sparse.hstack(blocks, format="csr"), document

    def _strategy_features(self, x: Any, document: Any, commitment_share: np.ndarray) -> Any:
        """The strategy head's features: both heads' features, plus the document bag scaled by the chance that
        the sentence reports a commitment (`commitment_share`, one value per sentence)."""
        if self.gated_document_weight <= 0:
            return x
        from scipy import sparse

        gated = sparse.diags(commitment_share * self.gated_document_weight) @ document
        return sparse.hstack([x, gated], format="csr")

    def _classifier(self, C: float, solver: str) -> Any:
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(
            C=C, class_weight=self.class_weight, solver=solver, max_iter=3000, random_state=self.seed
        )

    # the protocol

    def _fit(self, train: Sequence[LabelledSentence], dev: Sequence[LabelledSentence] | None) -> Self:
        train = in_document_order(train)
        self._fit_heads(train)
        self.strategy_thresholds_ = np.full(len(STRATEGY_LABELS), 0.5)
        if not self.tune_thresholds:
            return self
        from pipeline.metrics import tune_thresholds

        if self.threshold_folds > 1:
            from sklearn.base import clone

            from pipeline.labelled_data import grouped_folds

            out_of_fold = np.zeros((len(train), len(STRATEGY_LABELS)))
            for fit_idx, held_idx in grouped_folds(train, n_folds=self.threshold_folds, seed=self.seed):
                fold = clone(self).set_params(tune_thresholds=False)
                fold.fit([train[i] for i in fit_idx])
                held = sentence_texts([train[i] for i in held_idx])
                out_of_fold[held_idx] = fold.predict_proba(held).strategy
            gold = strategy_matrix([s.strategy for s in train])
            rows = strategy_labelled(train)  # sentences whose strategy labels count
            self.strategy_thresholds_ = tune_thresholds(out_of_fold[rows], gold[rows])
        elif dev:
            dev = in_document_order(dev)
            probs = self.predict_proba(sentence_texts(dev))
            gold = strategy_matrix([s.strategy for s in dev])
            self.strategy_thresholds_ = tune_thresholds(probs.strategy, gold)
        return self

    def _fit_heads(self, train: Sequence[LabelledSentence]) -> None:
        self.features_ = self._new_features(len(train))
        x, document = self._transform(sentence_texts(train), fit=True)
        y_strategy = strategy_matrix([s.strategy for s in train])
        y_commitment = commitment_indices([s.commitment for s in train])
        reports_commitment = (y_commitment != _NO_COMMITMENT).astype(float)
        x_strategy = self._strategy_features(x, document, reports_commitment)
        weights = training_weights(train)  # the data sources' weights (silver may count for less than gold)
        strategy_weights = training_weights(train, "strategy")
        strategy_rows = strategy_weights > 0  # sentences whose strategy labels count

        # a label with one class only in train (tiny data) becomes a constant instead of a classifier
        self.strategy_models_: list[Any] = []
        for j in range(len(STRATEGY_LABELS)):
            column = y_strategy[:, j]
            if column[strategy_rows].min() == column[strategy_rows].max():
                self.strategy_models_.append(float(column[strategy_rows][0]))
            else:
                # liblinear: the fastest exact solver for one sparse binary problem
                classifier = self._classifier(self.strategy_C or self.C, "liblinear")
                self.strategy_models_.append(classifier.fit(x_strategy, column, sample_weight=strategy_weights))
        if len(np.unique(y_commitment)) == 1:
            self.commitment_model_: Any = int(y_commitment[0])
        else:
            # newton-cg: multinomial, and several times faster than lbfgs on these sparse features
            self.commitment_model_ = self._classifier(self.C, "newton-cg").fit(x, y_commitment, sample_weight=weights)

    def predict_proba(self, sentences: Sequence[SentenceText]) -> HeadProbabilities:
        check_fitted(self, "features_")
        n = len(sentences)
        strategy = np.empty((n, len(STRATEGY_LABELS)))
        if n == 0:
            empty = np.empty((0, len(COMMITMENT_LABELS)))
            return HeadProbabilities(strategy, empty, strategy_thresholds=self.strategy_thresholds_.copy())
        x, document = self._transform(sentences)
        commitment = np.zeros((n, len(COMMITMENT_LABELS)))
        if isinstance(self.commitment_model_, int):
            commitment[:, self.commitment_model_] = 1.0
        else:
            commitment[:, self.commitment_model_.classes_] = self.commitment_model_.predict_proba(x)
        x_strategy = self._strategy_features(x, document, 1.0 - commitment[:, _NO_COMMITMENT])
        for j, head in enumerate(self.strategy_models_):
            strategy[:, j] = head if isinstance(head, float) else head.predict_proba(x_strategy)[:, 1]
        return HeadProbabilities(
            strategy=strategy, commitment=commitment, strategy_thresholds=self.strategy_thresholds_.copy()
        )

    def _vectorizers(self) -> dict[str, Any]:
        named = dict(self.features_["text"].transformer_list)
        for name in ("context", "document"):
            if name in self.features_:
                named[name] = self.features_[name]
        return named

    def save(self, path: Path) -> None:
        import skops.io

        check_fitted(self, "features_")
        path = Path(path)
        write_model_json(
            path,
            self.kind,
            params=self.params(),
            strategy_thresholds=self.strategy_thresholds_.tolist(),
            estimators=_ESTIMATORS_FILE,
            vocabulary=_VOCABULARY_FILE,
        )
        vectorizers = self._vectorizers()
        vocabularies = {name: v.vocabulary_ for name, v in vectorizers.items()}
        (path / _VOCABULARY_FILE).write_text(
            json.dumps({n: {t: int(i) for t, i in v.items()} for n, v in vocabularies.items()}, ensure_ascii=False),
            encoding="utf-8",
        )
        try:
            for vectorizer in vectorizers.values():
                vectorizer.vocabulary_ = {}
            skops.io.dump(
                {
                    "features": self.features_,
                    "strategy": self.strategy_models_,
                    "commitment": self.commitment_model_,
                },
                path / _ESTIMATORS_FILE,
            )
        finally:
            for name, vectorizer in vectorizers.items():
                vectorizer.vocabulary_ = vocabularies[name]

    @classmethod
    def load(cls, path: Path) -> Self:
        from pipeline.models.skops_file import load_estimators

        path = Path(path)
        card = read_model_json(path, cls.kind)
        state = load_estimators(path / card["estimators"])
        model = cls(**card["params"])
        model.features_ = state["features"]
        vocabularies = json.loads((path / card["vocabulary"]).read_text(encoding="utf-8"))
        for name, vectorizer in model._vectorizers().items():
            vectorizer.vocabulary_ = vocabularies[name]
        model.strategy_models_ = list(state["strategy"])
        model.commitment_model_ = state["commitment"]
        model.strategy_thresholds_ = np.asarray(card["strategy_thresholds"], dtype=float)
        return model
