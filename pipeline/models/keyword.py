"""Keyword rules from a cue lexicon (configs/lexicon.yaml): a yardstick that needs no training, made into a
`SentenceModel` whose probabilities are the rules' measured precision on the training data."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
import yaml

from pipeline.labelled_data import strategy_labelled
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
from pipeline.training_config import KeywordSpec

_LEXICON_FILE = "lexicon.yaml"


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


class KeywordModel(SinglePassModel):
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

    def _fit(self, train: Sequence[LabelledSentence], dev: Sequence[LabelledSentence] | None) -> Self:
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
        counts = strategy_labelled(train)  # strategy rates only where the strategy labels count
        hits, gold_strategy = hits[counts], gold_strategy[counts]
        fired_rate = (np.sum(hits & (gold_strategy == 1), axis=0) + 1) / (hits.sum(axis=0) + 2)
        silent_rate = (np.sum(~hits & (gold_strategy == 1), axis=0) + 1) / ((~hits).sum(axis=0) + 2)
        self.strategy_fired_ = np.clip(fired_rate, 0.5, 0.99)
        self.strategy_silent_ = np.clip(silent_rate, 0.01, 0.49)
        return self

    def predict_proba(self, sentences: Sequence[SentenceText]) -> HeadProbabilities:
        check_fitted(self, "commitment_confidence_")
        hits, predicted = self.rule_decisions([s.text for s in sentences])
        n, k = len(sentences), len(COMMITMENT_LABELS)
        confidence = self.commitment_confidence_[predicted]
        commitment = np.repeat(((1 - confidence) / (k - 1))[:, None], k, axis=1)
        commitment[np.arange(n), predicted] = confidence
        strategy = np.where(hits, self.strategy_fired_[None, :], self.strategy_silent_[None, :])
        return HeadProbabilities(strategy=strategy.astype(float), commitment=commitment)

    def save(self, path: Path) -> None:
        check_fitted(self, "commitment_confidence_")
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
