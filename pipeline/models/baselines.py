"""Baseline sentence models: majority class, keyword rules, TF-IDF + logistic regression.

They are the yardsticks the BERT model must beat (and candidates for an ensemble), so they share its
interface exactly: configured in the constructor, learn in `fit`, answer in `predict_proba`, and save to a
folder with `model.json` that `pipeline.models.load_model` restores.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
import yaml

from pipeline.config import KeywordSpec, MajoritySpec, TfidfSpec
from pipeline.labelled_data import in_document_order, sentence_texts, training_weights
from pipeline.models.base import EpochCallback, Float32Inference, read_model_json, write_model_json
from pipeline.schema import (
    COMMITMENT_LABELS,
    STRATEGY_LABELS,
    HeadProbabilities,
    LabelledSentence,
    SentenceText,
    commitment_indices,
    strategy_matrix,
)

_ESTIMATORS_FILE = "estimators.skops"
# skops writes every vocabulary entry as its own array (35,000 files, 38 MB for the default model), so the
# vectorizers' vocabularies travel as one JSON file instead
_VOCABULARY_FILE = "vocabulary.json"
_LEXICON_FILE = "lexicon.yaml"


def _check_fitted(model: object, attribute: str) -> None:
    if not hasattr(model, attribute):
        raise RuntimeError(f"{type(model).__name__} is not fitted: call fit() or load() first")


# --- majority ----------------------------------------------------------------------------------------


class MajorityModel(Float32Inference):
    """Predicts the training distribution for every sentence: the floor any model must clear."""

    kind = "majority"

    @classmethod
    def from_spec(cls, spec: MajoritySpec) -> MajorityModel:
        return cls()

    def fit(
        self,
        train: Sequence[LabelledSentence],
        dev: Sequence[LabelledSentence] | None = None,
        *,
        callbacks: Sequence[EpochCallback] = (),  # no epochs: never called
    ) -> Self:
        if not train:
            raise ValueError("MajorityModel.fit: no training sentences")
        gold = commitment_indices([s.commitment for s in train])
        counts = np.bincount(gold, minlength=len(COMMITMENT_LABELS))
        self.commitment_prior_ = counts / counts.sum()
        self.strategy_prior_ = strategy_matrix([s.strategy for s in train]).mean(axis=0)
        return self

    def predict_proba(self, sentences: Sequence[SentenceText]) -> HeadProbabilities:
        _check_fitted(self, "commitment_prior_")
        n = len(sentences)
        return HeadProbabilities(
            strategy=np.tile(self.strategy_prior_, (n, 1)),
            commitment=np.tile(self.commitment_prior_, (n, 1)),
        )

    def save(self, path: Path) -> None:
        _check_fitted(self, "commitment_prior_")
        write_model_json(
            Path(path),
            self.kind,
            commitment_prior=self.commitment_prior_.tolist(),
            strategy_prior=self.strategy_prior_.tolist(),
        )

    @classmethod
    def load(cls, path: Path) -> Self:
        card = read_model_json(Path(path), cls.kind)
        model = cls()
        model.commitment_prior_ = np.asarray(card["commitment_prior"], dtype=float)
        model.strategy_prior_ = np.asarray(card["strategy_prior"], dtype=float)
        return model


# --- keyword rules -----------------------------------------------------------------------------------


def _default_lexicon_path(path: Path) -> Path:
    """A relative lexicon path that is not found from the working directory is tried from the repository."""
    if path.is_file() or path.is_absolute():
        return path
    repository = Path(__file__).resolve().parents[2]
    return repository / path if (repository / path).is_file() else path


def parse_lexicon(raw: Any, source: str = "<lexicon>") -> dict[str, dict[str, list[str]]]:
    """Validate a lexicon mapping {strategy: {label: [regex]}, commitment: {label: [regex]}}."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{source}: a lexicon is a mapping with 'strategy' and 'commitment' sections")
    unknown_sections = set(raw) - {"strategy", "commitment"}
    if unknown_sections:
        found = sorted(unknown_sections)
        raise ValueError(f"{source}: unknown section(s) {found}; expected strategy, commitment")
    allowed = {"strategy": STRATEGY_LABELS, "commitment": tuple(c for c in COMMITMENT_LABELS if c != "none")}
    out: dict[str, dict[str, list[str]]] = {}
    for section, labels in allowed.items():
        entries = raw.get(section) or {}
        if not isinstance(entries, Mapping):
            raise ValueError(f"{source}: {section}: expected a mapping of label -> list of patterns")
        unknown = set(entries) - set(labels)
        if unknown:
            found = sorted(unknown)
            raise ValueError(f"{source}: {section}: unknown label(s) {found}; expected {list(labels)}")
        out[section] = {}
        for label in labels:
            patterns = entries.get(label) or []
            if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
                raise ValueError(f"{source}: {section}.{label}: expected a list of regex strings")
            for pattern in patterns:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ValueError(f"{source}: {section}.{label}: bad regex {pattern!r}: {exc}") from None
            out[section][label] = list(patterns)
    return out


def read_lexicon(path: Path | str) -> dict[str, dict[str, list[str]]]:
    path = _default_lexicon_path(Path(path))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: keyword lexicon not found")
    return parse_lexicon(yaml.safe_load(path.read_text(encoding="utf-8")), str(path))


class KeywordModel(Float32Inference):
    """Rules from a cue lexicon: a strategy label fires on any of its cues; commitment takes the first type
    (funding > pending_proposal > support > institution) with a matching cue, else none.

    `fit` learns no rules; it only measures how often each rule is right on the training data, so that the
    probabilities mean something (a fired rule's probability is its training precision, floored so the rule's
    decision stays the argmax).
    """

    kind = "keyword"

    def __init__(self, lexicon: Mapping[str, Mapping[str, list[str]]]) -> None:
        self.lexicon = parse_lexicon(lexicon)
        cues = self.lexicon
        self._strategy_rules = [self._compile(cues["strategy"][label]) for label in STRATEGY_LABELS]
        self._commitment_rules = [self._compile(cues["commitment"].get(c, [])) for c in COMMITMENT_LABELS]

    @staticmethod
    def _compile(patterns: list[str]) -> re.Pattern[str] | None:
        return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE) if patterns else None

    @classmethod
    def from_spec(cls, spec: KeywordSpec) -> KeywordModel:
        return cls(read_lexicon(spec.lexicon))

    @classmethod
    def from_file(cls, path: Path | str) -> KeywordModel:
        return cls(read_lexicon(path))

    def rule_decisions(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(strategy hits (n, 3) bool, commitment class index (n,)) by the rules alone."""
        hits = np.array(
            [[bool(rule and rule.search(t)) for rule in self._strategy_rules] for t in texts], dtype=bool
        ).reshape(len(texts), len(STRATEGY_LABELS))
        none = COMMITMENT_LABELS.index("none")
        commitment = np.full(len(texts), none, dtype=np.int64)
        for i, text in enumerate(texts):
            # precedence is the order of COMMITMENT_LABELS: the first type with a matching cue wins
            for j, rule in enumerate(self._commitment_rules):
                if rule is not None and rule.search(text):
                    commitment[i] = j
                    break
        return hits, commitment

    def fit(
        self,
        train: Sequence[LabelledSentence],
        dev: Sequence[LabelledSentence] | None = None,
        *,
        callbacks: Sequence[EpochCallback] = (),  # no epochs: never called
    ) -> Self:
        if not train:
            raise ValueError("KeywordModel.fit: no training sentences")
        hits, predicted = self.rule_decisions([s.text for s in train])
        gold_strategy = strategy_matrix([s.strategy for s in train])
        gold_commitment = commitment_indices([s.commitment for s in train])
        k = len(COMMITMENT_LABELS)
        precision = np.empty(k)
        for j in range(k):
            fired = predicted == j
            # Laplace smoothing keeps unseen rules away from 0 and 1
            precision[j] = (np.sum(gold_commitment[fired] == j) + 1) / (fired.sum() + 2)
        self.commitment_confidence_ = np.clip(precision, 1 / k + 0.05, 0.99)
        fired_rate = (np.sum(hits & (gold_strategy == 1), axis=0) + 1) / (hits.sum(axis=0) + 2)
        silent_rate = (np.sum(~hits & (gold_strategy == 1), axis=0) + 1) / ((~hits).sum(axis=0) + 2)
        self.strategy_fired_ = np.clip(fired_rate, 0.5, 0.99)
        self.strategy_silent_ = np.clip(silent_rate, 0.01, 0.49)
        return self

    def predict_proba(self, sentences: Sequence[SentenceText]) -> HeadProbabilities:
        _check_fitted(self, "commitment_confidence_")
        hits, predicted = self.rule_decisions([s.text for s in sentences])
        n, k = len(sentences), len(COMMITMENT_LABELS)
        confidence = self.commitment_confidence_[predicted]
        commitment = np.repeat(((1 - confidence) / (k - 1))[:, None], k, axis=1)
        commitment[np.arange(n), predicted] = confidence
        strategy = np.where(hits, self.strategy_fired_[None, :], self.strategy_silent_[None, :])
        return HeadProbabilities(strategy=strategy.astype(float), commitment=commitment)

    def save(self, path: Path) -> None:
        _check_fitted(self, "commitment_confidence_")
        path = Path(path)
        write_model_json(
            path,
            self.kind,
            lexicon=_LEXICON_FILE,
            commitment_confidence=self.commitment_confidence_.tolist(),
            strategy_fired=self.strategy_fired_.tolist(),
            strategy_silent=self.strategy_silent_.tolist(),
        )
        # the folder carries its own copy of the rules, so later edits to configs/lexicon.yaml don't change it
        (path / _LEXICON_FILE).write_text(yaml.safe_dump(self.lexicon, allow_unicode=True, sort_keys=False))

    @classmethod
    def load(cls, path: Path) -> Self:
        path = Path(path)
        card = read_model_json(path, cls.kind)
        model = cls(read_lexicon(path / card["lexicon"]))
        model.commitment_confidence_ = np.asarray(card["commitment_confidence"], dtype=float)
        model.strategy_fired_ = np.asarray(card["strategy_fired"], dtype=float)
        model.strategy_silent_ = np.asarray(card["strategy_silent"], dtype=float)
        return model


# --- TF-IDF + logistic regression ---------------------------------------------------------------------


class TfidfModel(Float32Inference):
    """TF-IDF word and character n-grams with logistic regression.

    Strategy: one binary classifier per label (one-vs-rest), with per-label decision thresholds tuned for F1:
    with `threshold_folds=k` on out-of-fold predictions of k document-grouped folds of train (dev untouched),
    otherwise on `dev` when `fit` is given one, otherwise 0.5.
    Commitment: one multinomial classifier. With `context=True` the neighbouring sentences add a separate,
    down-weighted bag of words.
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
        return features

    def _transform(self, sentences: Sequence[SentenceText], fit: bool = False) -> Any:
        from scipy import sparse

        texts = [s.text for s in sentences]
        text_features = self.features_["text"]
        blocks = [text_features.fit_transform(texts) if fit else text_features.transform(texts)]
        if "context" in self.features_:
            around = [f"{s.previous} {s.next}" for s in sentences]
            vectorizer = self.features_["context"]
            matrix = vectorizer.fit_transform(around) if fit else vectorizer.transform(around)
            blocks.append(matrix * self.context_weight)
        return sparse.hstack(blocks, format="csr")

    def _classifier(self, C: float, solver: str) -> Any:
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(
            C=C, class_weight=self.class_weight, solver=solver, max_iter=3000, random_state=self.seed
        )

    # the protocol

    def fit(
        self,
        train: Sequence[LabelledSentence],
        dev: Sequence[LabelledSentence] | None = None,
        *,
        callbacks: Sequence[EpochCallback] = (),  # no epochs: never called
    ) -> Self:
        if not train:
            raise ValueError("TfidfModel.fit: no training sentences")
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
            self.strategy_thresholds_ = tune_thresholds(out_of_fold, gold)
        elif dev:
            dev = in_document_order(dev)
            probs = self.predict_proba(sentence_texts(dev))
            gold = strategy_matrix([s.strategy for s in dev])
            self.strategy_thresholds_ = tune_thresholds(probs.strategy, gold)
        return self

    def _fit_heads(self, train: Sequence[LabelledSentence]) -> None:
        self.features_ = self._new_features(len(train))
        x = self._transform(sentence_texts(train), fit=True)
        y_strategy = strategy_matrix([s.strategy for s in train])
        y_commitment = commitment_indices([s.commitment for s in train])
        weights = training_weights(train)  # the data sources' weights (silver may count for less than gold)

        # a label with one class only in train (tiny data) becomes a constant instead of a classifier
        self.strategy_models_: list[Any] = []
        for j in range(len(STRATEGY_LABELS)):
            column = y_strategy[:, j]
            if column.min() == column.max():
                self.strategy_models_.append(float(column[0]))
            else:
                # liblinear: the fastest exact solver for one sparse binary problem
                classifier = self._classifier(self.strategy_C or self.C, "liblinear")
                self.strategy_models_.append(classifier.fit(x, column, sample_weight=weights))
        if len(np.unique(y_commitment)) == 1:
            self.commitment_model_: Any = int(y_commitment[0])
        else:
            # newton-cg: multinomial, and several times faster than lbfgs on these sparse features
            self.commitment_model_ = self._classifier(self.C, "newton-cg").fit(x, y_commitment, sample_weight=weights)

    def predict_proba(self, sentences: Sequence[SentenceText]) -> HeadProbabilities:
        _check_fitted(self, "features_")
        n = len(sentences)
        strategy = np.empty((n, len(STRATEGY_LABELS)))
        if n == 0:
            empty = np.empty((0, len(COMMITMENT_LABELS)))
            return HeadProbabilities(strategy, empty, strategy_thresholds=self.strategy_thresholds_.copy())
        x = self._transform(sentences)
        for j, head in enumerate(self.strategy_models_):
            strategy[:, j] = head if isinstance(head, float) else head.predict_proba(x)[:, 1]
        commitment = np.zeros((n, len(COMMITMENT_LABELS)))
        if isinstance(self.commitment_model_, int):
            commitment[:, self.commitment_model_] = 1.0
        else:
            commitment[:, self.commitment_model_.classes_] = self.commitment_model_.predict_proba(x)
        return HeadProbabilities(
            strategy=strategy, commitment=commitment, strategy_thresholds=self.strategy_thresholds_.copy()
        )

    def _vectorizers(self) -> dict[str, Any]:
        named = dict(self.features_["text"].transformer_list)
        if "context" in self.features_:
            named["context"] = self.features_["context"]
        return named

    def save(self, path: Path) -> None:
        import skops.io

        _check_fitted(self, "features_")
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
