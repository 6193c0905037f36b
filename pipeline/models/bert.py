"""The main model: one shared BERT encoder with two heads, trained jointly.

Commitment is a softmax over the five types (class-weighted or focal loss, the rare types matter most);
strategy is three independent sigmoids with per-label thresholds tuned on dev. With `context` the previous and
next sentence are read as a second segment. Any backbone works: an HF id (KB-BERT in production) or a folder
such as the `pipeline pretrain` output; a masked-LM checkpoint loses its MLM head on load.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import PreTrainedTokenizerBase

from pipeline.config import BertSpec, EvaluateConfig
from pipeline.labelled_data import in_document_order, sentence_texts
from pipeline.metrics import tune_thresholds
from pipeline.models.backbone import load_encoder, load_tokenizer, quiet_transformers, set_threads
from pipeline.models.base import (
    EpochCallback,
    InferenceReport,
    QuantizationOutOfTolerance,
    label_disagreement,
    read_model_json,
    write_model_json,
)
from pipeline.models.bert_inference import LOWER_PRECISIONS
from pipeline.models.bert_training import TwoHeadCollator, fine_tune
from pipeline.models.two_head import TwoHeadModel
from pipeline.schema import (
    COMMITMENT_LABELS,
    STRATEGY_LABELS,
    HeadProbabilities,
    LabelledSentence,
    SentenceText,
    commitment_indices,
    strategy_matrix,
)
from pipeline.scores import evaluate_predictions

logger = logging.getLogger(__name__)
# The layout saved before the model was a transformers model: encoder/ + heads.safetensors (still loaded).
OLD_ENCODER_DIR = "encoder"
OLD_HEADS_FILE = "heads.safetensors"
_SHOWN_METRICS = ("train_loss", "dev_mean_macro_f1")


# --- inputs ---------------------------------------------------------------------------------------------


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
    alone does not fit (so `truncated` means the sentence was cut, never just its context).
    """
    texts = [s.text for s in sentences]
    if not context:
        batch = tokenizer(texts, truncation=True, max_length=max_length)
        return [_encoded(batch, i, ids, context) for i, ids in enumerate(batch["input_ids"])]
    sep = tokenizer.sep_token
    around = [f"{s.previous} {sep} {s.next}".strip() for s in sentences]
    own = tokenizer(texts, add_special_tokens=False)["input_ids"]
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


def sentence_truncated(
    tokenizer: PreTrainedTokenizerBase, sentences: Sequence[SentenceText], encoded: Sequence[Encoded], max_length: int
) -> np.ndarray:
    """Which sentences lost some of their OWN tokens to `max_length` (cut context does not count).

    Only inputs that reached `max_length` can have been cut; just those sentences are tokenised again.
    """
    full = [i for i, e in enumerate(encoded) if len(e.input_ids) >= max_length]
    truncated = np.zeros(len(encoded), dtype=bool)
    if full:
        own = tokenizer([sentences[i].text for i in full], add_special_tokens=False)["input_ids"]
        for i, ids in zip(full, own, strict=True):
            truncated[i] = len(ids) > sum(encoded[i].sentence_mask)
    return truncated


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


# --- scoring used for early stopping and thresholds ------------------------------------------------------


def head_scores(probabilities: HeadProbabilities, gold: Sequence[LabelledSentence]) -> dict[str, float]:
    """Both heads' macro-F1 as the evaluation harness defines them (no bootstrap: this runs every epoch)."""
    report = evaluate_predictions(gold, probabilities, EvaluateConfig(bootstrap_samples=0, top_errors=0))
    return {key: report.metrics[key] for key in ("commitment_macro_f1", "strategy_macro_f1")}


# --- the model ------------------------------------------------------------------------------------------


@dataclass
class _InferenceSettings:
    """What `configure_inference` chose; `disagreement` is filled by the first checked prediction."""

    precision: str = "float32"
    network: nn.Module | None = None  # the lower-precision network to run; None: the float32 one
    max_tokens_per_batch: int | None = None
    check_sentences: int = 256
    max_disagreement: float = 0.02
    disagreement: float | None = None


class BertTwoHeadModel:
    """The SentenceModel for BERT: `fit` fine-tunes backbone and both heads; `save`/`load` an HF folder."""

    kind = "bert"
    # "auto": the fastest stored path that passed its agreement check (pipeline.models.agreement), else float32
    precisions: tuple[str, ...] = ("float32", "auto", *LOWER_PRECISIONS)

    def __init__(self, spec: BertSpec | None = None) -> None:
        self.spec = spec or BertSpec()
        self.strategy_thresholds_ = np.full(len(STRATEGY_LABELS), 0.5)
        self.history_: list[dict[str, float]] = []
        self._inference = _InferenceSettings()

    def _collate(self, items: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        return TwoHeadCollator(self.tokenizer_)(items)

    @classmethod
    def from_spec(cls, spec: BertSpec) -> BertTwoHeadModel:
        return cls(spec)

    # building blocks

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        self._check_ready()
        return self.tokenizer_

    @property
    def device(self) -> torch.device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def _autocast_dtype(self) -> torch.dtype | None:
        """bf16 (or fp16 if asked) on CUDA; full precision on CPU, where autocast is slower than float32."""
        if self.device.type != "cuda" or self.spec.mixed_precision == "no":
            return None
        if self.spec.mixed_precision == "fp16":
            return torch.float16
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def _build(self, backbone: str | Path) -> None:
        self.tokenizer_ = load_tokenizer(backbone)
        encoder = load_encoder(backbone, dropout=self.spec.dropout)
        limit = getattr(encoder.config, "max_position_embeddings", self.spec.max_length)
        self.max_length_ = min(self.spec.max_length, limit)
        self.network_ = TwoHeadModel.from_encoder(
            encoder,
            pooling=self.spec.pooling,
            head_dropout=self.spec.dropout,
            max_tokens=self.max_length_,
            context=self.spec.context,
        ).to(self.device)

    def _check_ready(self) -> None:
        if not hasattr(self, "network_"):
            raise RuntimeError("BertTwoHeadModel is not fitted: call fit() or load() first")

    def _inputs(self, sentences: Sequence[LabelledSentence]) -> tuple[list[LabelledSentence], list[SentenceText]]:
        ordered = in_document_order(sentences)
        texts = sentence_texts(ordered)
        if not self.spec.context:
            texts = [SentenceText(text=t.text) for t in texts]
        return ordered, texts

    def _parameter_groups(self) -> list[dict[str, Any]]:
        """Weight decay off for biases and LayerNorm; layer-wise lr decay from the top layer down."""
        spec = self.spec
        network = self.network_
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

    # the protocol

    def fit(
        self,
        train: Sequence[LabelledSentence],
        dev: Sequence[LabelledSentence] | None = None,
        *,
        callbacks: Sequence[EpochCallback] = (),
    ) -> Self:
        """Fine-tune; with `dev`, keep the epoch with the best mean macro-F1, stop after `patience` worse."""
        if not train:
            raise ValueError("BertTwoHeadModel.fit: no training sentences")
        spec = self.spec
        set_threads(spec.threads)
        random.seed(spec.seed)
        np.random.seed(spec.seed)
        torch.manual_seed(spec.seed)
        self._build(spec.backbone)
        self.configure_inference()

        def labelled_features(sentences: Sequence[LabelledSentence]) -> list[dict[str, Any]]:
            ordered, texts = self._inputs(sentences)
            encoded = encode_sentences(self.tokenizer_, texts, spec.context, self.max_length_)
            strategy = strategy_matrix([s.strategy for s in ordered]).astype(float)
            return [
                {**features(e), "commitment_labels": int(c), "strategy_labels": strategy[i].tolist()}
                for i, (e, c) in enumerate(
                    zip(encoded, commitment_indices([s.commitment for s in ordered]), strict=True)
                )
            ]

        ordered_dev = self._inputs(dev)[0] if dev else []

        def score_dev(strategy: np.ndarray, commitment: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
            return self._score_dev(HeadProbabilities(strategy, commitment), ordered_dev)

        self.history_, best_thresholds = fine_tune(
            self.network_,
            self.tokenizer_,
            spec,
            labelled_features(train),
            labelled_features(dev) if dev else None,
            score_dev,
            torch.optim.AdamW(self._parameter_groups()),
            self._autocast_dtype(),
            callbacks,
        )
        if best_thresholds is not None:
            self.strategy_thresholds_ = best_thresholds
        return self

    def _score_dev(
        self, probabilities: HeadProbabilities, ordered: Sequence[LabelledSentence]
    ) -> tuple[dict[str, float], np.ndarray]:
        """Dev macro-F1 at 0.5 and (if tuning) at thresholds tuned on dev; the mean of both heads decides."""
        probabilities.strategy_thresholds = np.full(len(STRATEGY_LABELS), 0.5)
        at_half = head_scores(probabilities, ordered)
        metrics = {f"dev_{k}_at_0.5": v for k, v in at_half.items()}
        thresholds = probabilities.strategy_thresholds
        if self.spec.tune_thresholds:
            thresholds = tune_thresholds(probabilities.strategy, strategy_matrix([s.strategy for s in ordered]))
            probabilities.strategy_thresholds = thresholds
        scores = head_scores(probabilities, ordered)
        metrics.update({f"dev_{k}": v for k, v in scores.items()})
        metrics["dev_mean_macro_f1"] = (scores["commitment_macro_f1"] + scores["strategy_macro_f1"]) / 2
        return metrics, thresholds

    # inference

    def configure_inference(
        self,
        precision: str = "float32",
        threads: int | None = None,
        *,
        max_tokens_per_batch: int | None = None,
        check_sentences: int = 256,
        max_disagreement: float = 0.02,
    ) -> None:
        """How `predict_proba` runs: precision, CPU threads, padded tokens per batch.

        A lower precision is accepted only after a check: on the first `check_sentences` sentences of the first
        prediction, the share whose labels (commitment, or any strategy label) differ from float32 must be at
        most `max_disagreement`, else `QuantizationOutOfTolerance`. bf16 on a CPU without native bf16 runs in
        float32 (`inference_report` says which ran). The float32 network is kept: saving and reconfiguring work.
        """
        if precision not in self.precisions:
            raise ValueError(f"bert model: unknown precision {precision!r}; choose one of {list(self.precisions)}")
        set_threads(threads)
        if precision == "auto":
            self._use_stored_fast_path(threads, max_tokens_per_batch)
            return
        lower = None
        if precision != "float32":
            self._check_ready()
            lower = LOWER_PRECISIONS[precision](self.network_, self.device)
        self._inference = _InferenceSettings(
            precision=precision if lower is not None else "float32",
            network=lower,
            max_tokens_per_batch=max_tokens_per_batch,
            check_sentences=check_sentences,
            max_disagreement=max_disagreement,
        )

    def _use_stored_fast_path(self, threads: int | None, max_tokens_per_batch: int | None) -> None:
        """The path stored with the model that passed its agreement check; float32 (one notice) otherwise.

        The check was paid when the model was trained, so none runs here: a short batch starts at full speed.
        """
        from pipeline.models.agreement import fast_path

        precision, network, notice, disagreement = fast_path(getattr(self, "folder_", None), threads)
        if network is None:
            logger.warning("%s", notice)
        self._inference = _InferenceSettings(
            precision=precision,
            network=network,
            max_tokens_per_batch=max_tokens_per_batch,
            disagreement=disagreement,  # as measured on dev sentences when the model was trained
        )

    def inference_report(self) -> InferenceReport:
        return InferenceReport(self._inference.precision, self._inference.disagreement)

    def predict_proba(
        self, sentences: Sequence[SentenceText], max_tokens_per_batch: int | None = None
    ) -> HeadProbabilities:
        """Probabilities for both heads, and which sentences were cut; batches are length-sorted, token-capped."""
        self._check_ready()
        settings = self._inference
        budget = max_tokens_per_batch or settings.max_tokens_per_batch or self.spec.max_tokens_per_batch
        encoded = encode_sentences(self.tokenizer_, sentences, self.spec.context, self.max_length_) if sentences else []
        network = settings.network if settings.network is not None else self.network_
        strategy, commitment = self._run(network, encoded, budget)
        probabilities = HeadProbabilities(
            strategy=strategy,
            commitment=commitment,
            strategy_thresholds=self.strategy_thresholds_.copy(),
            truncated=sentence_truncated(self.tokenizer_, sentences, encoded, self.max_length_),
        )
        if settings.network is not None and settings.disagreement is None and encoded:
            self._check_precision(probabilities, encoded, budget)
        return probabilities

    def _check_precision(self, lower: HeadProbabilities, encoded: Sequence[Encoded], budget: int) -> None:
        settings = self._inference
        k = min(len(encoded), settings.check_sentences)
        strategy, commitment = self._run(self.network_, encoded[:k], budget)
        reference = HeadProbabilities(strategy, commitment, lower.strategy_thresholds)
        disagreement = label_disagreement(reference, lower.rows(slice(0, k)))
        if disagreement > settings.max_disagreement:
            raise QuantizationOutOfTolerance(
                f"precision {settings.precision}: its labels differ from float32 on {disagreement:.1%} of {k} "
                f"sentences (at most {settings.max_disagreement:.1%} allowed)"
            )
        settings.disagreement = disagreement

    def _run(self, network: nn.Module, encoded: Sequence[Encoded], budget: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(encoded)
        strategy = np.zeros((n, len(STRATEGY_LABELS)), dtype=np.float64)
        commitment = np.zeros((n, len(COMMITMENT_LABELS)), dtype=np.float64)
        if not n:
            return strategy, commitment
        batches = token_budget_batches([len(e.input_ids) for e in encoded], budget)
        device, amp = self.device, self._autocast_dtype()
        was_training = network.training
        network.eval()
        with torch.inference_mode():
            for rows in batches:
                batch = {k: t.to(device) for k, t in self._collate([features(encoded[i]) for i in rows]).items()}
                with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                    logits_c, logits_s = network(**batch)
                commitment[rows] = torch.softmax(logits_c.float(), dim=-1).cpu().numpy()
                strategy[rows] = torch.sigmoid(logits_s.float()).cpu().numpy()
        network.train(was_training)
        return strategy, commitment

    def save(self, path: Path) -> None:
        """A transformers folder (config.json, model.safetensors, tokenizer) plus the project's model.json.

        `AutoModel.from_pretrained(path)` loads the network wherever `pipeline.models.two_head` is imported.
        """
        self._check_ready()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.network_.config.strategy_thresholds = self.strategy_thresholds_.tolist()
        self.network_.config.max_tokens = self.max_length_
        with quiet_transformers():
            self.network_.save_pretrained(str(path))
            self.tokenizer_.save_pretrained(str(path))
        write_model_json(
            path,
            self.kind,
            spec=self.spec.model_dump(mode="json"),
            strategy_thresholds=self.strategy_thresholds_.tolist(),
            max_length=self.max_length_,
            history=self.history_,
        )

    @classmethod
    def load(cls, path: Path) -> Self:
        """A folder `save` wrote, or one in the old layout (encoder/ + heads.safetensors + model.json)."""
        path = Path(path)
        card = read_model_json(path, cls.kind)
        model = cls(BertSpec.model_validate(card["spec"]))
        if "heads" in card or (path / OLD_HEADS_FILE).is_file():
            model._load_old_layout(path, card)
        else:
            model.tokenizer_ = load_tokenizer(path)
            with quiet_transformers():
                model.network_ = TwoHeadModel.from_pretrained(str(path))
        model.network_.to(model.device).eval()
        model.max_length_ = int(card.get("max_length", model.spec.max_length))
        model.strategy_thresholds_ = np.asarray(card["strategy_thresholds"], dtype=float)
        model.history_ = list(card.get("history", []))
        model.folder_ = path  # where the stored fast inference paths are (pipeline.models.agreement)
        return model

    def _load_old_layout(self, path: Path, card: dict[str, Any]) -> None:
        """The encoder from encoder/, the two heads from heads.safetensors (as the old code wrote them)."""
        self._build(path / card.get("encoder", OLD_ENCODER_DIR))
        heads = load_file(str(path / card.get("heads", OLD_HEADS_FILE)))
        for name in ("commitment", "strategy"):
            getattr(self.network_, name).load_state_dict(
                {key.split(".", 1)[1]: value for key, value in heads.items() if key.startswith(f"{name}.")}
            )
