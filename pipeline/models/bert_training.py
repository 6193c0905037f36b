"""Fine-tuning the two-head model on transformers' `Trainer`.

`Trainer` brings the loop, length-grouped batches, gradient accumulation, clipping, the linear warmup schedule,
bf16/fp16 on a GPU, per-epoch evaluation, checkpoints and keeping the best epoch; this module adds what is
ours: the two-head loss (class-weighted or focal commitment, positive-weighted strategy), the dev score that
picks the best epoch (mean macro-F1 of both heads, thresholds tuned on dev) and per-epoch reporting.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import SequentialSampler
from transformers import (
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from pipeline.labelled_data import strategy_labelled
from pipeline.metrics import head_macro_f1, tune_thresholds
from pipeline.models.backbone import quiet_transformers
from pipeline.models.base import EpochCallback
from pipeline.schema import COMMITMENT_LABELS, STRATEGY_LABELS, HeadProbabilities, LabelledSentence, strategy_matrix
from pipeline.training_config import BertSpec

BEST_METRIC = "dev_mean_macro_f1"
# Scores dev probabilities (strategy (n, 3), commitment (n, 5)): (metrics, the strategy thresholds they used)
DevScorer = Callable[[np.ndarray, np.ndarray], tuple[dict[str, float], np.ndarray]]


def head_scores(probabilities: HeadProbabilities, gold: Sequence[LabelledSentence]) -> dict[str, float]:
    """Both heads' macro-F1 as the evaluation harness defines them (this runs every epoch: no report)."""
    return head_macro_f1(gold, probabilities)


def dev_scores(
    probabilities: HeadProbabilities, ordered: Sequence[LabelledSentence], tune: bool
) -> tuple[dict[str, float], np.ndarray]:
    """Dev macro-F1 at 0.5 and (if `tune`) at thresholds tuned on dev; the mean of both heads picks the epoch.

    Strategy is scored, and its thresholds tuned, only on sentences whose strategy labels count.
    """
    rows = np.flatnonzero(strategy_labelled(ordered))
    labelled = [ordered[i] for i in rows]

    def scores_now() -> dict[str, float]:
        scores = head_scores(probabilities, ordered)
        if len(rows) < len(ordered):
            scores["strategy_macro_f1"] = head_scores(probabilities.rows(rows), labelled)["strategy_macro_f1"]
        return scores

    probabilities.strategy_thresholds = np.full(len(STRATEGY_LABELS), 0.5)
    at_half = scores_now()
    metrics = {f"dev_{k}_at_0.5": v for k, v in at_half.items()}
    thresholds = probabilities.strategy_thresholds
    if tune:
        gold = strategy_matrix([s.strategy for s in labelled])
        thresholds = tune_thresholds(probabilities.strategy[rows], gold)
        probabilities.strategy_thresholds = thresholds
    scores = scores_now()
    metrics.update({f"dev_{k}": v for k, v in scores.items()})
    metrics[BEST_METRIC] = (scores["commitment_macro_f1"] + scores["strategy_macro_f1"]) / 2
    return metrics, thresholds


@dataclass
class TwoHeadCollator:
    """`DataCollatorWithPadding` for the model inputs and labels; `sentence_mask` padded alongside."""

    tokenizer: PreTrainedTokenizerBase

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        masks = [torch.tensor(f["sentence_mask"], dtype=torch.long) for f in features]
        rest = [{k: v for k, v in f.items() if k != "sentence_mask"} for f in features]
        batch = dict(DataCollatorWithPadding(self.tokenizer)(rest))
        batch["sentence_mask"] = pad_sequence(masks, batch_first=True)
        return batch


def commitment_weights(gold: np.ndarray) -> torch.Tensor:
    """Balanced class weights n / (k * count); a type absent from train gets weight 1."""
    counts = np.bincount(gold, minlength=len(COMMITMENT_LABELS)).astype(float)
    weights = np.where(counts > 0, len(gold) / (len(COMMITMENT_LABELS) * np.maximum(counts, 1)), 1.0)
    return torch.tensor(weights, dtype=torch.float32)


def strategy_pos_weight(gold: np.ndarray) -> torch.Tensor:
    """negatives / positives per label, capped: a rare label's positives count more, but not without bound."""
    positives = gold.sum(axis=0).astype(float)
    ratio = (len(gold) - positives) / np.maximum(positives, 1.0)
    return torch.tensor(np.clip(ratio, 1.0, 20.0), dtype=torch.float32)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, gamma: float) -> torch.Tensor:
    """Per-sentence focal loss (Lin et al. 2017): down-weights examples the model already gets right."""
    log_p = F.log_softmax(logits.float(), dim=-1)
    log_pt = log_p.gather(1, target[:, None]).squeeze(1)
    loss = -((1 - log_pt.exp()) ** gamma) * log_pt
    return loss if weight is None else loss * weight[target]


@dataclass
class TwoHeadLoss:
    """Commitment loss ("weighted", "focal" or "plain") + strategy BCE (optionally positive-weighted).

    Each sentence counts with its training weight (its data source's `weight`; 1 for gold), and in the strategy
    head with its strategy weight (0: its strategy labels are not used).
    """

    commitment_loss: str
    focal_gamma: float
    commitment_weight: torch.Tensor | None
    pos_weight: torch.Tensor | None

    def __call__(
        self,
        logits_c: torch.Tensor,
        logits_s: torch.Tensor,
        c: torch.Tensor,
        s: torch.Tensor,
        sample_weight: torch.Tensor | None = None,
        strategy_weight: torch.Tensor | None = None,
    ) -> Any:
        weight = None if self.commitment_weight is None else self.commitment_weight.to(logits_c.device)
        pos_weight = None if self.pos_weight is None else self.pos_weight.to(logits_s.device)
        w = torch.ones(len(c), device=logits_c.device) if sample_weight is None else sample_weight.float()
        if self.commitment_loss == "focal":
            per_sentence = focal_loss(logits_c, c, weight, self.focal_gamma)
        else:
            per_sentence = F.cross_entropy(logits_c.float(), c, weight=weight, reduction="none")
        class_weight = torch.ones_like(w) if weight is None else weight[c]
        loss_c = (w * per_sentence).sum() / (w * class_weight).sum()
        bce = F.binary_cross_entropy_with_logits(logits_s.float(), s.float(), pos_weight=pos_weight, reduction="none")
        ws = w if strategy_weight is None else strategy_weight.float()
        loss_s = (ws * bce.mean(dim=1)).sum() / ws.sum().clamp(min=1e-12)
        return loss_c + loss_s


class TwoHeadTrainer(Trainer):
    """`Trainer` with the two-head loss; evaluation returns both heads' logits."""

    def __init__(self, *args: Any, loss: TwoHeadLoss, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.two_head_loss = loss

    def _get_eval_sampler(self, eval_dataset: Any) -> torch.utils.data.Sampler | None:
        """Dev in its own (document) order: the dev score matches predictions to sentences by position."""
        return SequentialSampler(eval_dataset) if eval_dataset is not None else None

    def compute_loss(
        self, model: Any, inputs: dict[str, torch.Tensor], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        c, s = inputs.pop("commitment_labels"), inputs.pop("strategy_labels")
        sample_weight = inputs.pop("sample_weight", None)
        strategy_weight = inputs.pop("strategy_weight", None)
        logits_c, logits_s = model(**inputs)
        loss = self.two_head_loss(logits_c, logits_s, c, s, sample_weight, strategy_weight)
        return (loss, {"commitment_logits": logits_c, "strategy_logits": logits_s}) if return_outputs else loss


class EpochReport(TrainerCallback):
    """Per epoch: train loss and dev metrics to the caller's callbacks and the history; dev thresholds kept."""

    def __init__(self, callbacks: Sequence[EpochCallback], has_dev: bool) -> None:
        self.callbacks = list(callbacks)
        self.has_dev = has_dev
        self.pending: dict[str, float] = {}
        self.history: list[dict[str, float]] = []
        self.thresholds: dict[int, np.ndarray] = {}
        self.last_thresholds: np.ndarray | None = None

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **_: Any) -> None:
        if logs and "loss" in logs:
            self.pending["train_loss"] = float(logs["loss"])
            if not self.has_dev:
                self._emit(state)

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None, **_: Any
    ) -> None:
        prefix = "eval_dev_"
        self.pending.update(
            {k.removeprefix("eval_"): float(v) for k, v in (metrics or {}).items() if k.startswith(prefix)}
        )
        if self.last_thresholds is not None:
            self.thresholds[round(state.epoch)] = self.last_thresholds
        self._emit(state)

    def _emit(self, state: Any) -> None:
        epoch = round(state.epoch)
        metrics, self.pending = self.pending, {}
        self.history.append({"epoch": float(epoch), **metrics})
        for callback in self.callbacks:
            callback(epoch, metrics)

    def best_epoch(self) -> int | None:
        """The first epoch with the highest dev score (as `Trainer` picks it), None without dev."""
        scored = [(h[BEST_METRIC], int(h["epoch"])) for h in self.history if BEST_METRIC in h]
        if not scored:
            return None
        best = max(score for score, _ in scored)
        return next(epoch for score, epoch in scored if score == best)


def training_arguments(spec: Any, output_dir: str, has_dev: bool, on_gpu: bool, amp: torch.dtype | None) -> Any:
    """The spec's settings in `Trainer` terms."""
    per_epoch = "epoch" if has_dev else "no"
    return TrainingArguments(
        output_dir=output_dir,
        num_train_epochs=spec.epochs,
        per_device_train_batch_size=spec.batch_size,
        per_device_eval_batch_size=max(spec.batch_size, 32),
        gradient_accumulation_steps=spec.gradient_accumulation,
        max_grad_norm=1.0,
        lr_scheduler_type="linear",
        warmup_steps=spec.warmup_fraction,
        seed=spec.seed,
        data_seed=spec.seed,
        train_sampling_strategy="group_by_length",  # batches of similar length: less padding on CPU
        eval_strategy=per_epoch,
        save_strategy=per_epoch,
        save_only_model=True,
        save_total_limit=1,
        load_best_model_at_end=has_dev,
        metric_for_best_model=BEST_METRIC if has_dev else None,
        greater_is_better=True,
        logging_strategy="epoch",
        report_to="none",
        use_cpu=not on_gpu,
        bf16=amp == torch.bfloat16,
        fp16=amp == torch.float16,
        remove_unused_columns=False,
        label_names=["commitment_labels", "strategy_labels"],
        dataloader_num_workers=0,
    )


def fine_tune(
    network: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    spec: Any,
    train_features: list[dict[str, Any]],
    dev_features: list[dict[str, Any]] | None,
    score_dev: DevScorer,
    optimizer: torch.optim.Optimizer,
    amp: torch.dtype | None,
    callbacks: Sequence[EpochCallback] = (),
) -> tuple[list[dict[str, float]], np.ndarray | None]:
    """Train `network` in place (ending on the best dev epoch); returns the history and that epoch's thresholds."""
    y_commitment = np.array([f["commitment_labels"] for f in train_features])
    # the positive weight counts only sentences whose strategy labels are used (strategy weight above 0)
    y_strategy = np.array([f["strategy_labels"] for f in train_features if f.get("strategy_weight", 1.0) > 0])
    loss = TwoHeadLoss(
        spec.commitment_loss,
        spec.focal_gamma,
        commitment_weights(y_commitment) if spec.commitment_loss != "plain" else None,
        strategy_pos_weight(y_strategy) if spec.strategy_pos_weight else None,
    )
    report = EpochReport(callbacks, has_dev=bool(dev_features))

    def compute_metrics(prediction: Any) -> dict[str, float]:
        logits_c, logits_s = prediction.predictions
        commitment = torch.softmax(torch.as_tensor(logits_c).float(), dim=-1).numpy().astype(np.float64)
        strategy = torch.sigmoid(torch.as_tensor(logits_s).float()).numpy().astype(np.float64)
        metrics, report.last_thresholds = score_dev(strategy, commitment)
        return metrics

    trainer_callbacks: list[TrainerCallback] = [report]
    if dev_features:
        trainer_callbacks.append(EarlyStoppingCallback(early_stopping_patience=spec.early_stopping_patience))
    with tempfile.TemporaryDirectory(prefix="ct-finetune-") as checkpoints:
        trainer = TwoHeadTrainer(
            model=network,
            args=training_arguments(spec, checkpoints, bool(dev_features), network.device.type == "cuda", amp),
            data_collator=TwoHeadCollator(tokenizer),
            train_dataset=train_features,
            eval_dataset=dev_features or None,
            compute_metrics=compute_metrics if dev_features else None,
            optimizers=(optimizer, None),
            callbacks=trainer_callbacks,
            loss=loss,
        )
        with quiet_transformers():  # the epoch bar stays; the per-checkpoint "Writing model shards" bars go
            trainer.train()
    network.eval()
    best = report.best_epoch()
    return report.history, (report.thresholds.get(best) if best is not None else None)


def parameter_groups(network: nn.Module, spec: BertSpec) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: weight decay off for biases and LayerNorm; layer-wise lr decay from
    the top encoder layer down (`spec.layerwise_lr_decay`), the heads at `head_learning_rate`."""
    layers = getattr(network.encoder.config, "num_hidden_layers", 0)
    head_lr = spec.head_learning_rate or spec.learning_rate
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, parameter in network.named_parameters():
        if name.startswith("encoder."):
            if ".layer." in name:
                depth = layers - 1 - int(name.split(".layer.")[1].split(".")[0])
            elif "embeddings" in name:
                depth = layers
            else:
                depth = 0
            lr = spec.learning_rate * spec.layerwise_lr_decay**depth
        else:
            lr = head_lr
        decay = 0.0 if parameter.ndim < 2 or "LayerNorm" in name else spec.weight_decay
        groups.setdefault((lr, decay), []).append(parameter)
    return [{"params": p, "lr": lr, "weight_decay": decay} for (lr, decay), p in groups.items()]
