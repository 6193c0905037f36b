"""The two-head network as a transformers model: `save_pretrained` / `from_pretrained` round-trip it.

A BERT-style encoder, a sentence vector ([CLS] or the mean over the sentence's own tokens) and two linear
heads: commitment (softmax over five types) and strategy (three sigmoids). The config holds the encoder's
config, the label lists and the strategy thresholds, so a saved folder is self-describing. Importing this
module registers the config and model with `AutoConfig` / `AutoModel`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel

from pipeline.schema import COMMITMENT_LABELS, STRATEGY_LABELS

MODEL_TYPE = "ct-two-head-bert"


class TwoHeadConfig(PretrainedConfig):
    """Encoder config (as a dict), pooling, head dropout, the label lists and tuned strategy thresholds."""

    model_type = MODEL_TYPE

    def __init__(
        self,
        encoder: dict[str, Any] | None = None,
        pooling: str = "cls",
        head_dropout: float = 0.1,
        commitment_labels: list[str] | None = None,
        strategy_labels: list[str] | None = None,
        strategy_thresholds: list[float] | None = None,
        max_tokens: int = 128,
        context: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.encoder = encoder or {"model_type": "bert"}
        self.pooling = pooling
        self.head_dropout = head_dropout
        self.commitment_labels = list(commitment_labels or COMMITMENT_LABELS)
        self.strategy_labels = list(strategy_labels or STRATEGY_LABELS)
        self.strategy_thresholds = list(strategy_thresholds or [0.5] * len(self.strategy_labels))
        self.max_tokens = max_tokens  # tokens per input (not `max_length`, a generation setting to HF)
        self.context = context

    def encoder_config(self) -> PretrainedConfig:
        values = dict(self.encoder)
        return AutoConfig.for_model(values.pop("model_type"), **values)


class TwoHeadModel(PreTrainedModel):
    """Encoder -> sentence vector -> (commitment logits, strategy logits)."""

    config_class = TwoHeadConfig
    base_model_prefix = "encoder"

    def __init__(self, config: TwoHeadConfig, encoder: PreTrainedModel | None = None) -> None:
        super().__init__(config)
        if encoder is not None:  # pretrained: post_init must not initialise it again
            for module in encoder.modules():
                module._is_hf_initialized = True
                for tensor in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
                    tensor._is_hf_initialized = True
        else:
            encoder_config = config.encoder_config()
            try:
                encoder = AutoModel.from_config(encoder_config, add_pooling_layer=False)
            except TypeError:  # architectures without a pooler take no such argument
                encoder = AutoModel.from_config(encoder_config)
        hidden = encoder.config.hidden_size
        self.encoder = encoder
        self.pooling = config.pooling
        self.dropout = nn.Dropout(config.head_dropout)
        self.commitment = nn.Linear(hidden, len(config.commitment_labels))
        self.strategy = nn.Linear(hidden, len(config.strategy_labels))
        self.post_init()

    @classmethod
    def from_encoder(cls, encoder: PreTrainedModel, **settings: Any) -> TwoHeadModel:
        """New heads (torch's default initialisation) on a pretrained encoder."""
        return cls(TwoHeadConfig(encoder=encoder.config.to_dict(), **settings), encoder=encoder)

    def _init_weights(self, module: nn.Module) -> None:
        """Nothing: the encoder comes initialised (or loaded) and the heads keep torch's default init."""

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor,
        sentence_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        if self.pooling == "cls":
            vector = hidden[:, 0]
        else:  # context tokens inform the sentence's tokens through attention but are not averaged in
            mask = attention_mask if sentence_mask is None else sentence_mask
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            vector = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        vector = self.dropout(vector)
        return self.commitment(vector), self.strategy(vector)


AutoConfig.register(MODEL_TYPE, TwoHeadConfig, exist_ok=True)
AutoModel.register(TwoHeadConfig, TwoHeadModel, exist_ok=True)
