"""The two-head BERT's inputs: sentences (+ neighbours) to token ids, token-budget batches.

Tokenisation happens once: every distinct string of a call (a sentence, a "previous [SEP] next" context) is
tokenised once without special tokens, and the model's inputs are put together from those ids with the
tokenizer's own special-token layout. The same ids say whether a sentence was cut (its `sentence_tokens` are
longer than what the input holds) and give the windows a long sentence is read in (`pipeline.models.windows`),
so nothing is tokenised a second time. Padding happens per batch (`bert_training.TwoHeadCollator`). With
context, the neighbours give way before the sentence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from transformers import PreTrainedTokenizerBase

from pipeline.schema import SentenceText
from pipeline.timing import phase


@dataclass
class Encoded:
    """Token ids of one sentence (+ context), unpadded; padding happens per batch."""

    input_ids: list[int]
    token_type_ids: list[int]
    sentence_mask: list[int]
    sentence_tokens: list[int] = field(default_factory=list)  # all of the sentence's own tokens, uncut

    @property
    def cut(self) -> bool:
        """Whether the input holds only part of the sentence (then it is read in windows)."""
        return len(self.sentence_tokens) > sum(self.sentence_mask)


@dataclass(frozen=True)
class SpecialLayout:
    """Where the tokenizer puts its special tokens around one sequence and around a pair, read off a probe."""

    single: tuple[list[int], list[int]]  # before, after
    pair: tuple[list[int], list[int], list[int]]  # before the sentence, between, after the context

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerBase) -> SpecialLayout:
        """Tokenise a probe pair and a probe sentence; the tokens of neither sequence are the special ones."""
        single, pair = tokenizer(["a"]), tokenizer(["a"], ["b"])
        [(first, last)] = _spans(single.sequence_ids(0))
        ids = single["input_ids"][0]
        pair_ids = pair["input_ids"][0]
        [(a0, a1), (b0, b1)] = _spans(pair.sequence_ids(0))
        return cls((ids[:first], ids[last:]), (pair_ids[:a0], pair_ids[a1:b0], pair_ids[b1:]))

    def encode(self, own: list[int], around: list[int] | None, max_length: int) -> Encoded:
        """One input: the sentence (cut only when it alone does not fit) and, with context, as much as fits."""
        if around is None:
            before, after = self.single
            room = max(0, max_length - len(before) - len(after))
            a, b, between = own[:room], [], []
        else:
            before, between, after = self.pair
            room = max(0, max_length - len(before) - len(between) - len(after))
            # room for at least one context token: the context is cut to fit; none: no context, the sentence cut
            a, b = (own, around[: room - len(own)]) if len(own) < room else (own[:room], [])
        ids = [*before, *a, *between, *b, *after]
        first_b = len(before) + len(a) + len(between)
        types = [0] * first_b + [1] * (len(ids) - first_b) if around is not None else [0] * len(ids)
        mask = [0] * len(before) + [1] * len(a) + [0] * (len(ids) - len(before) - len(a))
        return Encoded(ids, types, mask, own)


def _spans(sequence: list[int | None]) -> list[tuple[int, int]]:
    """[start, end) of each sequence in a probe's tokens; the tokens outside them are the special ones."""
    return [(sequence.index(k), len(sequence) - sequence[::-1].index(k)) for k in (0, 1) if k in sequence]


def encode_sentences(
    tokenizer: PreTrainedTokenizerBase, sentences: Sequence[SentenceText], context: bool, max_length: int
) -> list[Encoded]:
    """Sentence as segment A; with `context`, "previous [SEP] next" as segment B (type 1).

    The neighbours give way first: segment B is cut to make room, and the sentence itself is cut only when it
    alone does not fit (then `predict_proba` reads it in windows: pipeline.models.windows). Each distinct
    string is tokenised once.
    """
    if not sentences:
        return []
    with phase("tokenise"):
        texts = [s.text for s in sentences]
        sep = tokenizer.sep_token
        around = [f"{s.previous} {sep} {s.next}".strip() for s in sentences] if context else []
        distinct = list(dict.fromkeys([*texts, *around]))
        tokens = dict(
            zip(distinct, tokenizer(distinct, add_special_tokens=False, verbose=False)["input_ids"], strict=True)
        )
        layout = SpecialLayout.of(tokenizer)
        if not context:
            return [layout.encode(tokens[t], None, max_length) for t in texts]
        return [layout.encode(tokens[t], tokens[a], max_length) for t, a in zip(texts, around, strict=True)]


def features(item: Encoded) -> dict[str, list[int]]:
    """One input as the collator takes it."""
    return {
        "input_ids": item.input_ids,
        "token_type_ids": item.token_type_ids,
        "attention_mask": [1] * len(item.input_ids),
        "sentence_mask": item.sentence_mask,
    }


def token_budget_batches(lengths: Sequence[int], max_tokens: int, max_rows: int = 512) -> list[list[int]]:
    """Indices sorted by length (longest first) and cut so that rows x longest row <= max_tokens."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = lengths[current[0]] if current else lengths[i]
        if current and ((len(current) + 1) * width > max_tokens or len(current) >= max_rows):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches
