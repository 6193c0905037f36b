"""Masked-LM pretraining of a BERT backbone: from scratch (own cased WordPiece + small BERT) or continued
(domain-adaptive) from an existing checkpoint such as KB-BERT.

The corpus is streamed (bounded memory: a shuffle buffer of packed blocks), documents are split into training
and held-out by a hash of their text (the same split on every run), training checkpoints every N steps and a
rerun with the same `output_dir` resumes from the latest checkpoint. The output layer is applied to the masked
positions only (15% of tokens), which is most of the speed of a small model on CPU. MLflow is the caller's
business: metrics go out through `on_metrics`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import random
import shutil
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_model as load_safetensors_model
from safetensors.torch import save_model as save_safetensors_model
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tqdm import tqdm
from transformers import (
    AutoModelForMaskedLM,
    BertConfig,
    BertForMaskedLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    get_linear_schedule_with_warmup,
)

from pipeline.config import PretrainConfig, TokenizerConfig
from pipeline.models.backbone import load_tokenizer, quiet_transformers, set_threads

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
CHECKPOINTS = "checkpoints"
TRAINING_STATE = "training_state.pt"
RESULT_FILE = "pretrain.json"

MetricsCallback = Callable[[dict[str, float], int], None]


@dataclass(frozen=True)
class PretrainResult:
    output_dir: Path
    steps: int
    heldout_loss: float
    heldout_perplexity: float
    minutes: float
    resumed_from_step: int = 0
    steps_per_second: float = 0.0
    heldout_blocks: int = 0


# --- corpus ---------------------------------------------------------------------------------------------


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


def training_batches(cfg: PretrainConfig, tokenizer: PreTrainedTokenizerBase) -> Iterator[torch.Tensor]:
    """Endless (batch_size, block_size) batches of the training documents, epoch after epoch, reproducibly."""
    epoch = 0
    while True:
        rng = random.Random(cfg.seed * 100_003 + epoch)
        texts = (t for t in iter_corpus_texts(cfg.corpus) if not is_heldout(t, cfg.heldout_fraction))
        blocks = _shuffled(iter_blocks(texts, tokenizer, cfg.block_size), cfg.shuffle_buffer, rng)
        produced = 0
        for chunk in _chunks(blocks, cfg.batch_size):
            if len(chunk) < cfg.batch_size:
                break  # a ragged last batch would change the step's statistics; drop it
            produced += 1
            yield torch.tensor(chunk, dtype=torch.long)
        if produced == 0:
            raise ValueError(
                f"corpus {[str(p) for p in cfg.corpus]}: fewer than batch_size={cfg.batch_size} "
                f"training blocks of {cfg.block_size} tokens"
            )
        epoch += 1


def heldout_blocks(cfg: PretrainConfig, tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """The first `max_heldout_blocks` blocks of the held-out documents."""
    texts = (t for t in iter_corpus_texts(cfg.corpus) if is_heldout(t, cfg.heldout_fraction))
    blocks = list(islice(iter_blocks(texts, tokenizer, cfg.block_size), cfg.max_heldout_blocks))
    if not blocks:
        raise ValueError(
            f"corpus {[str(p) for p in cfg.corpus]}: no held-out block; raise pretrain.heldout_fraction "
            f"(now {cfg.heldout_fraction}) or add documents"
        )
    return torch.tensor(blocks, dtype=torch.long)


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


# --- masking and loss -----------------------------------------------------------------------------------


def mask_tokens(
    input_ids: torch.Tensor,
    tokenizer: PreTrainedTokenizerBase,
    probability: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BERT masking (80% [MASK], 10% random, 10% kept) with an explicit generator, so it resumes exactly.

    Returns (inputs, masked positions as a bool matrix, target ids of the masked positions).
    """
    special = torch.tensor(tokenizer.all_special_ids, dtype=input_ids.dtype)
    probs = torch.full(input_ids.shape, probability)
    probs.masked_fill_(torch.isin(input_ids, special), 0.0)
    masked = torch.bernoulli(probs, generator=generator).bool()
    if not masked.any():  # a tiny batch could mask nothing; the loss needs at least one target
        masked[0, 1] = True
    inputs = input_ids.clone()
    to_mask = torch.bernoulli(torch.full(input_ids.shape, 0.8), generator=generator).bool() & masked
    inputs[to_mask] = tokenizer.mask_token_id
    to_random = torch.bernoulli(torch.full(input_ids.shape, 0.5), generator=generator).bool() & masked & ~to_mask
    random_ids = torch.randint(len(tokenizer), input_ids.shape, generator=generator, dtype=input_ids.dtype)
    inputs[to_random] = random_ids[to_random]
    return inputs, masked, input_ids[masked]


def masked_lm_loss(
    model: PreTrainedModel, inputs: torch.Tensor, masked: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy on the masked positions; the vocabulary projection runs on those positions only."""
    if isinstance(model, BertForMaskedLM):
        hidden = model.bert(input_ids=inputs).last_hidden_state
        logits = model.cls(hidden[masked])
        return F.cross_entropy(logits.float(), targets)
    labels = torch.full_like(inputs, -100)  # other architectures: the library's full-vocabulary path
    labels[masked] = targets
    return model(input_ids=inputs, labels=labels).loss


@torch.inference_mode()
def heldout_loss(
    model: PreTrainedModel,
    blocks: torch.Tensor,
    tokenizer: PreTrainedTokenizerBase,
    cfg: PretrainConfig,
    device: torch.device,
) -> float:
    """Mean masked-LM loss over the held-out blocks, with masks fixed by the seed (comparable across runs)."""
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    total, count = 0.0, 0
    for batch in torch.split(blocks, cfg.batch_size):
        inputs, masked, targets = mask_tokens(batch, tokenizer, cfg.mask_probability, generator)
        with _autocast(device):
            loss = masked_lm_loss(model, inputs.to(device), masked.to(device), targets.to(device))
        total += float(loss) * len(targets)
        count += len(targets)
    model.train(was_training)
    return total / count


def _autocast(device: torch.device) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


# --- model ----------------------------------------------------------------------------------------------


def _build_model(cfg: PretrainConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    out = Path(cfg.output_dir)
    if cfg.mode == "continue":
        if not cfg.init_from:
            raise ValueError("pretrain.init_from: required when pretrain.mode is 'continue'")
        tokenizer = load_tokenizer(cfg.init_from)
        with quiet_transformers():
            model = AutoModelForMaskedLM.from_pretrained(cfg.init_from)
        limit = model.config.max_position_embeddings
    else:
        if (out / "tokenizer.json").is_file():  # a resumed run keeps the vocabulary its checkpoints use
            with quiet_transformers():
                tokenizer = PreTrainedTokenizerFast.from_pretrained(str(out))
        else:
            tokenizer = train_tokenizer(cfg.corpus, cfg.tokenizer, out)
        size = cfg.size
        if size.hidden % size.heads:
            raise ValueError(f"pretrain.size: hidden={size.hidden} is not divisible by heads={size.heads}")
        config = BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=size.hidden,
            num_hidden_layers=size.layers,
            num_attention_heads=size.heads,
            intermediate_size=size.intermediate,
            max_position_embeddings=size.max_positions,
            pad_token_id=tokenizer.pad_token_id,
            type_vocab_size=2,
        )
        model = BertForMaskedLM(config)
        limit = size.max_positions
    if cfg.block_size > limit:
        raise ValueError(f"pretrain.block_size={cfg.block_size} exceeds the model's {limit} positions")
    tokenizer.model_max_length = limit
    return model, tokenizer


def _parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if parameter.ndim < 2 or "LayerNorm" in name else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# --- checkpoints ----------------------------------------------------------------------------------------


def _data_fingerprint(cfg: PretrainConfig) -> str:
    """What decides the data stream; a checkpoint only resumes a run whose stream is the same."""
    keys = {
        "mode": cfg.mode,
        "init_from": cfg.init_from,
        "corpus": [str(p) for p in cfg.corpus],
        "block_size": cfg.block_size,
        "batch_size": cfg.batch_size,
        "heldout_fraction": cfg.heldout_fraction,
        "shuffle_buffer": cfg.shuffle_buffer,
        "seed": cfg.seed,
        "size": cfg.size.model_dump(),
    }
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]


def latest_checkpoint(output_dir: Path) -> Path | None:
    folder = Path(output_dir) / CHECKPOINTS
    found = sorted(p for p in folder.glob("step-*") if (p / TRAINING_STATE).is_file()) if folder.is_dir() else []
    return found[-1] if found else None


def _save_checkpoint(
    cfg: PretrainConfig,
    step: int,
    model: PreTrainedModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    mask_generator: torch.Generator,
) -> None:
    folder = Path(cfg.output_dir) / CHECKPOINTS
    final = folder / f"step-{step:08d}"
    partial = folder / f".partial-{step:08d}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_safetensors_model(model, str(partial / "model.safetensors"))
    state = {
        "step": step,
        "fingerprint": _data_fingerprint(cfg),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "mask_generator": mask_generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    torch.save(state, partial / TRAINING_STATE)
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)  # a crash mid-save leaves only a .partial folder, never a broken step-* one
    older = sorted(p for p in folder.glob("step-*") if p != final)
    for stale in older[: max(0, len(older) - (cfg.keep_checkpoints - 1))]:
        shutil.rmtree(stale, ignore_errors=True)


def _resume(
    cfg: PretrainConfig,
    model: PreTrainedModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    mask_generator: torch.Generator,
) -> int:
    checkpoint = latest_checkpoint(Path(cfg.output_dir))
    if checkpoint is None:
        return 0
    # weights_only: tensors, numbers, strings and containers only; a tampered file cannot run code on load
    state = torch.load(checkpoint / TRAINING_STATE, weights_only=True)
    if state["fingerprint"] != _data_fingerprint(cfg):
        raise ValueError(
            f"{checkpoint}: written by a run with other corpus/size/batch settings; use a new "
            "pretrain.output_dir or delete its checkpoints folder"
        )
    load_safetensors_model(model, str(checkpoint / "model.safetensors"))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    mask_generator.set_state(state["mask_generator"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(state["step"])


# --- the stage ------------------------------------------------------------------------------------------


def pretrain_backbone(cfg: PretrainConfig, on_metrics: MetricsCallback | None = None) -> PretrainResult:
    """Pretrain (or continue pretraining) a masked-LM backbone within `max_steps` / `max_minutes`.

    Writes a standard HF folder to `cfg.output_dir` (BertForMaskedLM safetensors + tokenizer + pretrain.json)
    that `pipeline train` can use as `backbone`. Rerunning with the same output_dir resumes.
    """
    started = time.monotonic()
    if not cfg.corpus:
        raise ValueError("pretrain.corpus: empty; give at least one JSONL(.gz) or .txt file")
    set_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    device = torch.device("cuda" if torch.cuda.is_available() and cfg.device != "cpu" else "cpu")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    model, tokenizer = _build_model(cfg)
    model.to(device).train()
    optimizer = torch.optim.AdamW(
        _parameter_groups(model, cfg.weight_decay), lr=cfg.learning_rate, betas=(0.9, 0.98), eps=1e-6
    )
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(cfg.warmup_fraction * cfg.max_steps), max(cfg.max_steps, 1)
    )
    mask_generator = torch.Generator().manual_seed(cfg.seed)
    start_step = _resume(cfg, model, optimizer, scheduler, mask_generator)
    heldout = heldout_blocks(cfg, tokenizer)

    step = start_step
    batches = training_batches(cfg, tokenizer)
    if start_step:
        # Replaying the stream (tokenising, no model work) puts the data exactly where the checkpoint was.
        for _ in islice(batches, start_step):
            pass
    deadline = started + cfg.max_minutes * 60 if cfg.max_minutes is not None else math.inf
    loop_started = time.monotonic()
    running, running_count = 0.0, 0
    progress = tqdm(total=cfg.max_steps, initial=step, unit="step", disable=None, desc="pretrain")
    while step < cfg.max_steps and time.monotonic() < deadline:
        inputs, masked, targets = mask_tokens(next(batches), tokenizer, cfg.mask_probability, mask_generator)
        with _autocast(device):
            loss = masked_lm_loss(model, inputs.to(device), masked.to(device), targets.to(device))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        running += loss.item()
        running_count += 1
        progress.update(1)
        if step % cfg.log_every == 0 or step == cfg.max_steps:
            rate = (step - start_step) / max(time.monotonic() - loop_started, 1e-9)
            progress.set_postfix(loss=f"{running / running_count:.3f}", steps_s=f"{rate:.2f}")
            if on_metrics is not None:
                metrics = {"mlm_loss": running / running_count, "learning_rate": scheduler.get_last_lr()[0]}
                on_metrics({**metrics, "steps_per_second": rate}, step)
            running, running_count = 0.0, 0
        if step % cfg.checkpoint_every == 0:
            _save_checkpoint(cfg, step, model, optimizer, scheduler, mask_generator)
    progress.close()
    train_seconds = time.monotonic() - loop_started
    if step > start_step and step % cfg.checkpoint_every:
        _save_checkpoint(cfg, step, model, optimizer, scheduler, mask_generator)

    loss_value = heldout_loss(model, heldout, tokenizer, cfg, device)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    result = PretrainResult(
        output_dir=out,
        steps=step,
        heldout_loss=loss_value,
        heldout_perplexity=math.exp(min(loss_value, 50.0)),
        minutes=(time.monotonic() - started) / 60,
        resumed_from_step=start_step,
        steps_per_second=(step - start_step) / train_seconds if step > start_step else 0.0,
        heldout_blocks=len(heldout),
    )
    (out / RESULT_FILE).write_text(json.dumps({**asdict(result), "output_dir": str(out)}, indent=2))
    if on_metrics is not None:
        on_metrics({"heldout_loss": loss_value, "heldout_perplexity": result.heldout_perplexity}, step)
    return result
