"""The two-head BERT's inputs: sentences (+ neighbours) to token ids, token-budget batches.

Tokenisation happens once per sentence; padding happens per batch (`bert_training.TwoHeadCollator`). With
context, the neighbours give way before the sentence; a sentence too long alone is cut here and read whole in
windows at prediction (`pipeline.models.windows`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from pipeline.schema import SentenceText


@dataclass
class Encoded:
    """Token ids of one sentence (+ context), unpadded; padding happens per batch."""

    input_ids: list[int]
    token_type_ids: list[int]
    sentence_mask: list[int]


def encode_sentences(
    tokenizer: PreTrainedTokenizerBase, sentences: Sequence[SentenceText], context: bool, max_length: int
) -> list[Encoded]:
    """Sentence as segment A; with `context`, "previous [SEP] next" as segment B (type 1).

    The neighbours give way first: segment B is cut to make room, and the sentence itself is cut only when it
    alone does not fit (then `predict_proba` reads it in windows: pipeline.models.windows).
    """
    texts = [s.text for s in sentences]
    if not context:
        batch = tokenizer(texts, truncation=True, max_length=max_length)
        return [_encoded(batch, i, ids, context) for i, ids in enumerate(batch["input_ids"])]
    sep = tokenizer.sep_token
    around = [f"{s.previous} {sep} {s.next}".strip() for s in sentences]
    own = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]  # no "longer than" warning
    room = max_length - tokenizer.num_special_tokens_to_add(pair=True)
    out: list[Encoded | None] = [None] * len(texts)
    # room for at least one context token: the context is cut to fit; none: no context, the sentence cut if
    # it is longer than the room (the tokenizer cannot cut a segment down to nothing)
    for strategy, with_context in (("only_second", True), ("only_first", False)):
        rows = [i for i, ids in enumerate(own) if (len(ids) < room) == with_context]
        if not rows:
            continue
        second = [around[i] if with_context else "" for i in rows]
        batch = tokenizer([texts[i] for i in rows], second, truncation=strategy, max_length=max_length)
        for k, ids in enumerate(batch["input_ids"]):
            out[rows[k]] = _encoded(batch, k, ids, context)
    return [e for e in out if e is not None]


def _encoded(batch: Any, i: int, ids: list[int], context: bool) -> Encoded:
    """One tokenized row as an `Encoded`: segment types and the mask of the sentence's own tokens."""
    sequence = batch.sequence_ids(i)
    # The shared tokenizers do not all mark segment B with type 1, so the types are set here.
    first_b = next((k for k, seq in enumerate(sequence) if seq == 1), len(ids))
    types = [0] * min(first_b, len(ids)) + [1] * max(0, len(ids) - first_b)
    if context and first_b == len(ids) and len(ids) >= 2:  # empty segment B: its closing [SEP]
        types[-1] = 1
    sentence_mask = [1 if seq == 0 else 0 for seq in sequence]
    return Encoded(list(ids), types, sentence_mask)


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
