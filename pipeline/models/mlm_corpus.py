"""The masked-LM corpus: documents streamed from JSONL(.gz) or .txt, split, packed into blocks; its tokenizer.

Bounded memory: documents are read one at a time and packed blocks shuffled in a fixed-size buffer. Documents
are split into training and held-out by a hash of their text, so the split is the same on every run and every
machine. A from-scratch run trains its own cased WordPiece vocabulary here.
"""

from __future__ import annotations

import gzip
import json
import random
import zlib
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from torch.utils.data import IterableDataset
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from pipeline.config_sections import PretrainConfig, TokenizerConfig

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


# --- documents ----------------------------------------------------------------------------------------------


def iter_corpus_texts(paths: Iterable[Path | str], max_documents: int | None = None) -> Iterator[str]:
    """A corpus one document at a time: JSONL(.gz) records with a `text` field, or .txt paragraphs."""
    count = 0
    for raw_path in paths:
        path = Path(raw_path)
        if not path.is_file():
            raise FileNotFoundError(f"corpus {path}: no such file")
        opener = gzip.open if path.suffix == ".gz" else open
        is_jsonl = ".jsonl" in path.suffixes or ".json" in path.suffixes
        with opener(path, "rt", encoding="utf-8") as handle:
            texts = _jsonl_texts(handle, path) if is_jsonl else _paragraphs(handle)
            for text in texts:
                if max_documents is not None and count >= max_documents:
                    return
                count += 1
                yield text


def _jsonl_texts(lines: Iterable[str], path: Path) -> Iterator[str]:
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"corpus {path}: line {lineno} is not valid JSON ({exc.msg})") from None
        text = record.get("text") if isinstance(record, dict) else None
        if not isinstance(text, str):
            raise ValueError(f"corpus {path}: line {lineno} has no string field `text`")
        if text.strip():
            yield text


def _paragraphs(lines: Iterable[str]) -> Iterator[str]:
    paragraph: list[str] = []
    for line in lines:
        if line.strip():
            paragraph.append(line.strip())
        elif paragraph:
            yield " ".join(paragraph)
            paragraph = []
    if paragraph:
        yield " ".join(paragraph)


def is_heldout(text: str, fraction: float) -> bool:
    """Deterministic document-level split: the same document is held out on every run and every machine."""
    return zlib.crc32(text.encode("utf-8")) / 2**32 < fraction


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def iter_blocks(
    texts: Iterable[str], tokenizer: PreTrainedTokenizerBase, block_size: int, docs_per_call: int = 64
) -> Iterator[list[int]]:
    """Pack documents into `[CLS] ... [SEP]` blocks of exactly `block_size` tokens, [SEP] between texts."""
    body = block_size - 2
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    backend = tokenizer.backend_tokenizer
    pending: list[int] = []
    for chunk in _chunks(texts, docs_per_call):
        for encoding in backend.encode_batch(chunk, add_special_tokens=False):
            pending.extend(encoding.ids)
            pending.append(sep_id)
            full = len(pending) // body * body
            for start in range(0, full, body):
                yield [cls_id, *pending[start : start + body], sep_id]
            del pending[:full]


def _shuffled(blocks: Iterable[list[int]], buffer_size: int, rng: random.Random) -> Iterator[list[int]]:
    """Reservoir-style shuffle with a bounded buffer: neighbouring blocks of one document get spread apart."""
    buffer: list[list[int]] = []
    for block in blocks:
        if len(buffer) < buffer_size:
            buffer.append(block)
            continue
        i = rng.randrange(buffer_size)
        yield buffer[i]
        buffer[i] = block
    rng.shuffle(buffer)
    yield from buffer


class TrainingBlocks(IterableDataset):
    """The training documents as an endless stream of packed blocks, epoch after epoch, reproducibly.

    Each epoch is shuffled with its own seed and ends on a whole number of batches (a ragged last batch would
    change the step's statistics), so `Trainer` resumes exactly by replaying the stream up to its checkpoint.
    """

    def __init__(self, cfg: PretrainConfig, tokenizer: PreTrainedTokenizerBase) -> None:
        self.cfg = cfg
        self.tokenizer = tokenizer

    def __iter__(self) -> Iterator[dict[str, list[int]]]:
        cfg = self.cfg
        epoch = 0
        while True:
            rng = random.Random(cfg.seed * 100_003 + epoch)
            texts = (t for t in iter_corpus_texts(cfg.corpus) if not is_heldout(t, cfg.heldout_fraction))
            blocks = _shuffled(iter_blocks(texts, self.tokenizer, cfg.block_size), cfg.shuffle_buffer, rng)
            produced = 0
            for chunk in _chunks(blocks, cfg.batch_size):
                if len(chunk) < cfg.batch_size:
                    break
                produced += 1
                yield from ({"input_ids": block} for block in chunk)
            if produced == 0:
                raise ValueError(
                    f"corpus {[str(p) for p in cfg.corpus]}: fewer than batch_size={cfg.batch_size} "
                    f"training blocks of {cfg.block_size} tokens"
                )
            epoch += 1


def heldout_blocks(cfg: PretrainConfig, tokenizer: PreTrainedTokenizerBase) -> list[list[int]]:
    """The first `max_heldout_blocks` blocks of the held-out documents."""
    texts = (t for t in iter_corpus_texts(cfg.corpus) if is_heldout(t, cfg.heldout_fraction))
    blocks = list(islice(iter_blocks(texts, tokenizer, cfg.block_size), cfg.max_heldout_blocks))
    if not blocks:
        raise ValueError(
            f"corpus {[str(p) for p in cfg.corpus]}: no held-out block; raise pretrain.heldout_fraction "
            f"(now {cfg.heldout_fraction}) or add documents"
        )
    return blocks


# --- tokenizer ------------------------------------------------------------------------------------------


def train_tokenizer(
    corpus_paths: Iterable[Path | str], cfg: TokenizerConfig, out_dir: Path | str
) -> PreTrainedTokenizerFast:
    """Train a BERT WordPiece tokenizer (cased unless configured; accents kept: å, ä, ö are letters here)."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=cfg.lowercase
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        continuing_subword_prefix="##",
        show_progress=False,
    )
    tokenizer.train_from_iterator(iter_corpus_texts(corpus_paths, cfg.max_documents), trainer=trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out))
    return fast
