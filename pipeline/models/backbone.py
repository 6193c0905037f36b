"""Loading a BERT-style backbone (an HF id or a folder) for fine-tuning or continued pretraining.

Both the production backbone (KB-BERT) and our own pretrain output are `BertForMaskedLM` folders; fine-tuning
wants only the encoder, so the masked-LM head is dropped here and nowhere else.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence the load report (the dropped MLM head is expected, not news) for the duration of a load."""
    previous = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # "Loading weights" / "Writing model shards" bars on every load and save
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)
        if bars:
            hf_logging.enable_progress_bar()


def _check_reachable(name_or_path: str) -> None:
    """A missing folder would otherwise turn into a hub lookup and a confusing network error."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"backbone {name_or_path!r}: folder has no config.json (not an HF model folder)")
        return
    # An HF id is "name" or "owner/name"; anything else that does not exist is a mistyped folder.
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise FileNotFoundError(f"backbone {name_or_path!r}: no such folder")


def load_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerBase:
    """The backbone's tokenizer; it must be a fast one (offsets, batched Rust encoding)."""
    _check_reachable(str(name_or_path))
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
    if not tokenizer.is_fast:
        raise ValueError(f"backbone {name_or_path}: tokenizer is not a fast (Rust) tokenizer")
    for name in ("cls_token", "sep_token", "pad_token"):
        if getattr(tokenizer, name) is None:
            raise ValueError(f"backbone {name_or_path}: tokenizer has no {name}")
    return tokenizer


def load_encoder(name_or_path: str | Path, dropout: float | None = None) -> PreTrainedModel:
    """The bare encoder (no pooler, no MLM head) from an HF id or folder holding any BERT-style weights."""
    _check_reachable(str(name_or_path))
    overrides: dict[str, float] = {}
    if dropout is not None:
        overrides = {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
    with quiet_transformers():
        try:
            encoder = AutoModel.from_pretrained(str(name_or_path), add_pooling_layer=False, **overrides)
        except TypeError:  # architectures without a pooler take no such argument
            encoder = AutoModel.from_pretrained(str(name_or_path), **overrides)
    return encoder


def set_threads(threads: int | None) -> None:
    """Bound torch's CPU threads (the machines are shared); None leaves torch's default."""
    if threads is not None:
        torch.set_num_threads(max(1, threads))
