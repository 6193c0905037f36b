"""Masked-LM pretraining of a BERT backbone on transformers' `Trainer`: from scratch (own cased WordPiece +
small BERT) or continued (domain-adaptive) from an existing checkpoint such as KB-BERT.

`Trainer` brings the loop, AdamW with the linear warmup schedule, gradient accumulation and clipping, bf16 on a
GPU, checkpoints (safetensors weights; optimizer, scheduler and RNG state read back with `weights_only`) and
resume; `DataCollatorForLanguageModeling` masks (80% [MASK], 10% random, 10% kept) with its own seeded
generator, so replaying the stream on resume gives the masks the uninterrupted run had. What is ours: the
corpus stream (`pipeline.models.mlm_corpus`), a loss that applies the output layer to the masked positions only
(most of a small model's speed on CPU), the `max_minutes` budget, the held-out score with fixed masks, and a
refusal to resume from a run with another data stream. MLflow is the caller's business: metrics go out through
`on_metrics`.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_model as load_safetensors_model
from transformers import (
    AutoModelForMaskedLM,
    BertConfig,
    BertForMaskedLM,
    DataCollatorForLanguageModeling,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from pipeline.config_sections import PretrainConfig
from pipeline.io.atomic import write_text_atomic
from pipeline.models.backbone import load_tokenizer, quiet_transformers, set_threads
from pipeline.models.mlm_corpus import TrainingBlocks, heldout_blocks, train_tokenizer

CHECKPOINTS = "checkpoints"
STREAM_FILE = "stream.json"  # in CHECKPOINTS: the data stream its checkpoints belong to
TRAINER_STATE = "trainer_state.json"  # written last into a checkpoint: its presence means the checkpoint is whole
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


# --- loss -----------------------------------------------------------------------------------------------


def masked_lm_loss(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the masked positions (labels != -100) and how many there were.

    For BERT the vocabulary projection runs on the masked positions only; other architectures take the
    library's full-vocabulary path.
    """
    labels = batch["labels"]
    masked = labels != -100
    count = int(masked.sum())
    if isinstance(model, BertForMaskedLM):
        hidden = model.bert(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).last_hidden_state
        logits = model.cls(hidden[masked])
        return F.cross_entropy(logits.float(), labels[masked], reduction="sum"), count
    loss = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"), labels=labels).loss
    return loss * count, count


class MaskedLMTrainer(Trainer):
    """`Trainer` with the masked-positions loss, averaged over the masked tokens of the whole accumulated step."""

    def compute_loss(
        self, model: Any, inputs: dict[str, torch.Tensor], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        total, count = masked_lm_loss(model, inputs)
        loss = total / (num_items_in_batch if num_items_in_batch is not None else max(count, 1))
        return (loss, None) if return_outputs else loss


def masking_collator(tokenizer: PreTrainedTokenizerBase, cfg: PretrainConfig, seed: int) -> Any:
    return DataCollatorForLanguageModeling(tokenizer, mlm_probability=cfg.mask_probability, seed=seed)


@torch.inference_mode()
def heldout_loss(
    model: PreTrainedModel, blocks: list[list[int]], tokenizer: PreTrainedTokenizerBase, cfg: PretrainConfig
) -> float:
    """Mean masked-LM loss over the held-out blocks, with masks fixed by the seed (comparable across runs)."""
    was_training = model.training
    model.eval()
    collate = masking_collator(tokenizer, cfg, cfg.seed + 1)  # a fresh generator: the same masks every time
    device = model.device
    total, count = 0.0, 0
    for start in range(0, len(blocks), cfg.batch_size):
        batch = collate([{"input_ids": block} for block in blocks[start : start + cfg.batch_size]])
        batch = {key: value.to(device) for key, value in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss, n = masked_lm_loss(model, batch)
        total += float(loss)
        count += n
    model.train(was_training)
    return total / max(count, 1)


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


def training_arguments(cfg: PretrainConfig, device: torch.device) -> TrainingArguments:
    """The config in `Trainer` terms (AdamW betas and epsilon as BERT pretraining uses them)."""
    on_gpu = device.type == "cuda"
    return TrainingArguments(
        output_dir=str(Path(cfg.output_dir) / CHECKPOINTS),
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,  # not on biases and LayerNorm (Trainer's own rule)
        adam_beta2=0.98,
        adam_epsilon=1e-6,
        max_grad_norm=1.0,
        lr_scheduler_type="linear",
        warmup_steps=cfg.warmup_fraction,  # below 1: a fraction of max_steps
        seed=cfg.seed,
        data_seed=cfg.seed,
        save_strategy="steps",
        save_steps=cfg.checkpoint_every,
        save_total_limit=cfg.keep_checkpoints,
        logging_strategy="steps",
        logging_steps=cfg.log_every,
        report_to="none",
        use_cpu=not on_gpu,
        bf16=on_gpu and torch.cuda.is_bf16_supported(),
        remove_unused_columns=False,
        dataloader_num_workers=0,  # the collator's generator lives in this process: masks replay exactly
    )


# --- checkpoints ----------------------------------------------------------------------------------------


def _data_fingerprint(cfg: PretrainConfig) -> str:
    """What decides the data stream; a checkpoint only resumes a run whose stream is the same."""
    keys = {
        "mode": cfg.mode,
        "init_from": cfg.init_from,
        "corpus": [str(p) for p in cfg.corpus],
        "block_size": cfg.block_size,
        "batch_size": cfg.batch_size,
        "gradient_accumulation": cfg.gradient_accumulation,
        "heldout_fraction": cfg.heldout_fraction,
        "mask_probability": cfg.mask_probability,
        "shuffle_buffer": cfg.shuffle_buffer,
        "seed": cfg.seed,
        "size": cfg.size.model_dump(),
    }
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]


def _step_of(checkpoint: Path) -> int:
    return int(checkpoint.name.removeprefix(f"{PREFIX_CHECKPOINT_DIR}-"))


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest whole checkpoint (one a crash interrupted while saving has no trainer state yet)."""
    folder = Path(output_dir) / CHECKPOINTS
    if not folder.is_dir():
        return None
    whole = [p for p in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if (p / TRAINER_STATE).is_file()]
    return max(whole, key=_step_of) if whole else None


def _check_stream(cfg: PretrainConfig, checkpoint: Path | None) -> None:
    """Record the data stream of a new run; refuse to resume a checkpoint another stream wrote."""
    stream = Path(cfg.output_dir) / CHECKPOINTS / STREAM_FILE
    fingerprint = _data_fingerprint(cfg)
    if checkpoint is None:
        stream.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(stream, json.dumps({"fingerprint": fingerprint}))
        return
    recorded = json.loads(stream.read_text(encoding="utf-8"))["fingerprint"] if stream.is_file() else None
    if recorded != fingerprint:
        raise ValueError(
            f"{checkpoint}: written by a run with other corpus/size/batch settings; use a new "
            "pretrain.output_dir or delete its checkpoints folder"
        )


class RunControl(TrainerCallback):
    """Metrics to `on_metrics` at every log; the `max_minutes` budget (stop, keeping the last step as a
    checkpoint); checkpoints without the pickled `training_args.bin` (nothing reads it back)."""

    def __init__(self, on_metrics: MetricsCallback | None, deadline: float, start_step: int) -> None:
        self.on_metrics = on_metrics
        self.deadline = deadline
        self.start_step = start_step
        self.started = time.monotonic()
        self.train_seconds = 0.0

    def on_train_begin(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        self.started = time.monotonic()

    def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        if time.monotonic() >= self.deadline:
            control.should_training_stop = True
            control.should_save = True
        if control.should_training_stop or state.global_step >= state.max_steps:
            control.should_log = True  # the last step's loss is reported even off the log_every grid
        self.train_seconds = time.monotonic() - self.started

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **_: Any) -> None:
        if self.on_metrics is None or not logs or "loss" not in logs:
            return
        rate = (state.global_step - self.start_step) / max(time.monotonic() - self.started, 1e-9)
        metrics = {"mlm_loss": float(logs["loss"]), "learning_rate": float(logs.get("learning_rate", 0.0))}
        self.on_metrics({**metrics, "steps_per_second": rate}, state.global_step)

    def on_save(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        checkpoint = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        (checkpoint / "training_args.bin").unlink(missing_ok=True)


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
    device = torch.device("cuda" if torch.cuda.is_available() and cfg.device != "cpu" else "cpu")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    model, tokenizer = _build_model(cfg)
    checkpoint = latest_checkpoint(out)
    _check_stream(cfg, checkpoint)
    start_step = _step_of(checkpoint) if checkpoint is not None else 0
    heldout = heldout_blocks(cfg, tokenizer)
    deadline = started + cfg.max_minutes * 60 if cfg.max_minutes is not None else math.inf
    control = RunControl(on_metrics, deadline, start_step)
    if start_step >= cfg.max_steps:  # nothing to train (max_steps 0: score the base model), or finished before
        if checkpoint is not None:
            load_safetensors_model(model, str(checkpoint / "model.safetensors"))
        model.to(device)
        steps = start_step
    else:
        trainer = MaskedLMTrainer(
            model=model,
            args=training_arguments(cfg, device),
            data_collator=masking_collator(tokenizer, cfg, cfg.seed),
            train_dataset=TrainingBlocks(cfg, tokenizer),
            callbacks=[control],
        )
        with quiet_transformers():
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
        steps = trainer.state.global_step

    loss_value = heldout_loss(model, heldout, tokenizer, cfg)
    with quiet_transformers():
        model.save_pretrained(str(out))
        tokenizer.save_pretrained(str(out))
    result = PretrainResult(
        output_dir=out,
        steps=steps,
        heldout_loss=loss_value,
        heldout_perplexity=math.exp(min(loss_value, 50.0)),
        minutes=(time.monotonic() - started) / 60,
        resumed_from_step=start_step,
        steps_per_second=(steps - start_step) / control.train_seconds if steps > start_step else 0.0,
        heldout_blocks=len(heldout),
    )
    write_text_atomic(out / RESULT_FILE, json.dumps({**asdict(result), "output_dir": str(out)}, indent=2))
    if on_metrics is not None:
        on_metrics({"heldout_loss": loss_value, "heldout_perplexity": result.heldout_perplexity}, steps)
    return result
