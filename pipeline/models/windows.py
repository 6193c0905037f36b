"""Sentences longer than the model reads, read whole: overlapping windows over the sentence's own tokens.

Real government text has single sentences of 300-700 characters (lists of amended laws, EU directive titles),
more tokens than a small BERT's 128 positions. Cutting them labels only their start and, rightly, makes
`label` exit 3 on a corpus with nothing wrong in it. Instead, a sentence whose own tokens do not fit is read
in windows of as many tokens as fit (half a window apart, so every token is read with some of its sentence
around it), in the same layout of special tokens as the cut input, without context (a sentence that fills
the model leaves no room for its neighbours anyway). The windows' probabilities are combined as the label
scheme reads a sentence (shared/labels.md): it gets every strategy dimension any part of it belongs to (the
highest probability over windows), and a commitment type when any part reports one (each type's highest
probability, `none` its lowest, renormalised), so nothing the sentence says is lost. A sentence read this
way is not `truncated`: the model read every token of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from pipeline.schema import COMMITMENT_LABELS

_NONE = COMMITMENT_LABELS.index("none")


class _Encoded(Protocol):
    input_ids: list[int]
    token_type_ids: list[int]
    sentence_mask: list[int]
    sentence_tokens: list[int]  # all of the sentence's own tokens, from the one tokenisation

    @property
    def cut(self) -> bool: ...


@dataclass(frozen=True)
class SentenceWindows:
    """The model's input rows: one per sentence that fits, several for a longer one; `owner` maps rows back."""

    rows: list[_Encoded]
    owner: np.ndarray  # (rows,) the index of the sentence each row reads
    sentences: int
    truncated: np.ndarray | None = None  # (sentences,) read only in part: not even one token fits a window

    def combine(self, strategy: np.ndarray, commitment: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-row probabilities -> per-sentence probabilities (a sentence read in one row keeps its own)."""
        if len(self.rows) == self.sentences:
            return strategy, commitment
        first = np.searchsorted(self.owner, np.arange(self.sentences))  # rows of a sentence are consecutive
        out_strategy, out_commitment = strategy[first].copy(), commitment[first].copy()
        counts = np.bincount(self.owner, minlength=self.sentences)
        for i in np.flatnonzero(counts > 1):
            rows = slice(first[i], first[i] + counts[i])
            out_strategy[i] = strategy[rows].max(axis=0)
            mixed = commitment[rows].max(axis=0)
            mixed[_NONE] = commitment[rows, _NONE].min()
            out_commitment[i] = mixed / mixed.sum()
        return out_strategy, out_commitment


def window_starts(length: int, width: int) -> list[int]:
    """Where the windows of `width` tokens start over `length` tokens: half a window apart, the last at the end."""
    step = max(1, width // 2)
    return [*range(0, length - width, step), length - width]


def sentence_windows(encoded: Sequence[_Encoded]) -> SentenceWindows:
    """Replace each input whose sentence was cut by windows covering all of the sentence.

    Whether a sentence was cut, and its tokens, come from the tokenisation the inputs were made with
    (`Encoded.sentence_tokens`): nothing is tokenised again.
    """
    rows: list[_Encoded] = []
    owner: list[int] = []
    truncated = np.zeros(len(encoded), dtype=bool)
    for i, e in enumerate(encoded):
        pieces = _windows(e, e.sentence_tokens) if e.cut else [e]
        truncated[i] = e.cut and pieces[0] is e  # no room for a window: only what fits was read
        rows += pieces
        owner += [i] * len(pieces)
    return SentenceWindows(rows, np.asarray(owner, dtype=np.int64), len(encoded), truncated)


def _windows(cut: _Encoded, ids: list[int]) -> list[_Encoded]:
    """The cut input with its sentence tokens replaced by each window in turn (special tokens as they were)."""
    mask = cut.sentence_mask
    a = mask.index(1)
    b = a + sum(mask)  # the sentence's own tokens are one run: [a, b)
    width = b - a
    if width == 0:  # nothing of the sentence fits beside the special tokens: nothing to slide
        return [cut]
    out: list[_Encoded] = []
    for start in window_starts(len(ids), width):
        out.append(
            replace(
                cut,  # type: ignore[type-var]
                input_ids=[*cut.input_ids[:a], *ids[start : start + width], *cut.input_ids[b:]],
                token_type_ids=[*cut.token_type_ids[:a], *[cut.token_type_ids[a]] * width, *cut.token_type_ids[b:]],
                sentence_mask=[*mask[:a], *[1] * width, *mask[b:]],
            )
        )
    return out
