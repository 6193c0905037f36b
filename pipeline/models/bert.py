"""The main model: one shared BERT encoder with two heads, trained jointly.

Commitment is a softmax over the five types (class-weighted or focal loss, the rare types matter most);
strategy is three independent sigmoids with per-label thresholds tuned on dev. With `context` the previous and
next sentence are read as a second segment. Any backbone works: an HF id (KB-BERT in production) or a folder
such as the `pipeline pretrain` output; a masked-LM checkpoint loses its MLM head on load.
"""

from __future__ import annotations

import copy
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

from pipeline.labelled_data import grouped_split, in_document_order, sentence_texts, training_weights
from pipeline.models.backbone import load_encoder, load_tokenizer, quiet_transformers, set_threads
from pipeline.models.base import (
    EpochCallback,
    InferenceReport,
    QuantizationOutOfTolerance,
    label_disagreement,
    read_model_json,
    write_model_json,
)
from pipeline.models.bert_inference import LOWER_PRECISIONS, batched_probabilities
from pipeline.models.bert_inputs import Encoded, encode_sentences, features
from pipeline.models.bert_training import TwoHeadCollator, dev_scores, fine_tune, parameter_groups
from pipeline.models.two_head import TwoHeadModel
from pipeline.models.windows import sentence_windows
from pipeline.schema import (
    STRATEGY_LABELS,
    HeadProbabilities,
    LabelledSentence,
    SentenceText,
    commitment_indices,
    strategy_matrix,
)
from pipeline.timing import phase
from pipeline.training_config import BertSpec

logger = logging.getLogger(__name__)
# The layout saved before the model was a transformers model: encoder/ + heads.safetensors (still loaded).
OLD_ENCODER_DIR = "encoder"
OLD_HEADS_FILE = "heads.safetensors"


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
        self._network: TwoHeadModel | None = None
        self.folder_: Path | None = None  # the folder it was loaded from: the PyTorch weights can be read again

    @property
    def network_(self) -> TwoHeadModel:
        """The PyTorch network; read again from the model folder if the ONNX path had let it go."""
        if self._network is None:
            if self.folder_ is None:
                raise RuntimeError("BertTwoHeadModel is not fitted: call fit() or load() first")
            self._network = type(self).load(self.folder_)._network
        return self._network  # type: ignore[return-value]

    @network_.setter
    def network_(self, network: TwoHeadModel) -> None:
        self._network = network

    @property
    def weights_loaded(self) -> bool:
        """Whether the PyTorch weights are in memory (not while a stored ONNX graph does the labelling)."""
        return self._network is not None

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
        if self._network is None and self.folder_ is None:
            raise RuntimeError("BertTwoHeadModel is not fitted: call fit() or load() first")

    def _inputs(self, sentences: Sequence[LabelledSentence]) -> tuple[list[LabelledSentence], list[SentenceText]]:
        ordered = in_document_order(sentences)
        texts = sentence_texts(ordered)
        if not self.spec.context:
            texts = [SentenceText(text=t.text) for t in texts]
        return ordered, texts

    # the protocol

    def fit(
        self,
        train: Sequence[LabelledSentence],
        dev: Sequence[LabelledSentence] | None = None,
        *,
        callbacks: Sequence[EpochCallback] = (),
    ) -> Self:
        """Fine-tune; keep the epoch with the best mean macro-F1 on `dev` (without one: on `validation_fraction`
        of the training documents), stop after `patience` worse epochs."""
        if not train:
            raise ValueError("BertTwoHeadModel.fit: no training sentences")
        spec = self.spec
        set_threads(spec.threads)
        random.seed(spec.seed)
        np.random.seed(spec.seed)
        torch.manual_seed(spec.seed)
        self._build(spec.backbone)
        self.configure_inference()
        if not dev and spec.validation_fraction > 0 and len({s.doc_id for s in train}) >= 2:
            # the epoch and the thresholds are chosen on held-out training documents, never on reported dev
            train, dev = grouped_split(train, spec.validation_fraction, spec.seed)

        def labelled_features(sentences: Sequence[LabelledSentence]) -> list[dict[str, Any]]:
            ordered, texts = self._inputs(sentences)
            encoded = encode_sentences(self.tokenizer_, texts, spec.context, self.max_length_)
            strategy = strategy_matrix([s.strategy for s in ordered]).astype(float)
            weights = training_weights(ordered)
            strategy_weights = training_weights(ordered, "strategy")
            return [
                {
                    **features(e),
                    "commitment_labels": int(c),
                    "strategy_labels": strategy[i].tolist(),
                    "sample_weight": float(weights[i]),
                    "strategy_weight": float(strategy_weights[i]),
                }
                for i, (e, c) in enumerate(
                    zip(encoded, commitment_indices([s.commitment for s in ordered]), strict=True)
                )
            ]

        ordered_dev = self._inputs(dev)[0] if dev else []

        def score_dev(strategy: np.ndarray, commitment: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
            return dev_scores(HeadProbabilities(strategy, commitment), ordered_dev, spec.tune_thresholds)

        self.history_, best_thresholds = fine_tune(
            self.network_,
            self.tokenizer_,
            spec,
            labelled_features(train),
            labelled_features(dev) if dev else None,
            score_dev,
            torch.optim.AdamW(parameter_groups(self.network_, spec)),
            self._autocast_dtype(),
            callbacks,
        )
        if best_thresholds is not None:
            self.strategy_thresholds_ = best_thresholds
        return self

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
        float32 (`inference_report` says which ran). With "auto" and a stored ONNX graph the PyTorch weights are
        let go (the graph holds its own copy) and read again from the model folder when saving or float32 needs
        them; otherwise the float32 network is kept.
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

        if self.folder_ is not None:
            # The graph holds its own copy of the weights: let the PyTorch one go before the graph is read, so
            # both are never in memory at once. It is read again from the folder if float32 is needed.
            self._network = None
        precision, network, notice, disagreement = fast_path(self.folder_, threads)
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

    @property
    def network(self) -> Any:
        """The fine-tuned two-head network (what the ONNX export reads)."""
        return self.network_

    def with_network(self, network: Any) -> Self:
        """A shallow copy that runs `network` instead (tokenizer, spec and thresholds shared)."""
        fast = copy.copy(self)
        fast.network_ = network
        return fast

    def prepare_inference(self, folder: Path, dev: Sequence[LabelledSentence]) -> list[dict[str, Any]]:
        """The ONNX paths of the model saved in `folder`, each checked against float32 on `dev` (read as this
        model reads it: document order, neighbours only with `context`); the card that `label` then reads."""
        from pipeline.models.agreement import prepare_fast_inference

        if not dev:
            return []
        texts = sentence_texts(in_document_order(dev))
        if not self.spec.context:
            texts = [SentenceText(text=t.text) for t in texts]
        return [prepare_fast_inference(self, Path(folder), texts)]

    def predict_proba(
        self, sentences: Sequence[SentenceText], max_tokens_per_batch: int | None = None
    ) -> HeadProbabilities:
        """Probabilities for both heads, every sentence read whole; batches are length-sorted, token-capped."""
        self._check_ready()
        settings = self._inference
        budget = max_tokens_per_batch or settings.max_tokens_per_batch or self.spec.max_tokens_per_batch
        encoded = encode_sentences(self.tokenizer_, sentences, self.spec.context, self.max_length_)
        # a sentence longer than the model reads is read whole, in windows (pipeline.models.windows), from the
        # same tokenisation: whether it was cut is known without tokenising it again
        with phase("tokenise"):
            windows = sentence_windows(encoded)
        network = settings.network if settings.network is not None else self.network_
        with phase("infer"):
            per_row = HeadProbabilities(*self._run(network, windows.rows, budget), self.strategy_thresholds_.copy())
            if settings.network is not None and settings.disagreement is None and windows.rows:
                self._check_precision(per_row, windows.rows, budget)
            strategy, commitment = windows.combine(per_row.strategy, per_row.commitment)
        return HeadProbabilities(strategy, commitment, self.strategy_thresholds_.copy(), windows.truncated)

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
        collate = TwoHeadCollator(self.tokenizer_)
        return batched_probabilities(network, encoded, budget, collate, self.device, self._autocast_dtype())

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
