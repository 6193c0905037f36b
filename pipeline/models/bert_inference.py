"""How a BERT model's network labels: batched forward passes, and the precisions it can run in besides float32.

`batched_probabilities` runs a network over encoded sentences in length-sorted batches capped by padded
tokens. `BertTwoHeadModel.configure_inference` is the one place a precision is chosen; it looks the precision
up in `LOWER_PRECISIONS` (each a copy of the network to run instead) and keeps the float32 network as the
reference the lower precision is checked against.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.models.bert_inputs import Encoded, features, token_budget_batches
from pipeline.schema import COMMITMENT_LABELS, STRATEGY_LABELS


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast is worth running: a CUDA device, or a CPU with native bf16 (AVX512-BF16/AMX)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


class Bf16Network(nn.Module):
    """Runs a two-head network's forward pass under bf16 autocast; the weights stay float32 (and shared).

    The innermost autocast wins, so this holds even inside the model's own (disabled on CPU) autocast.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, **batch: torch.Tensor) -> Any:
        device = next(self.network.parameters()).device.type
        with torch.autocast(device, dtype=torch.bfloat16):
            return self.network(**batch)


def dynamic_int8(network: nn.Module, device: torch.device) -> nn.Module | None:
    """A copy whose Linear layers run in int8 (weights static, activations quantized on the fly); CPU only."""
    if device.type != "cpu":
        raise ValueError(f"precision 'int8' (dynamic quantization) runs on CPU only; this model is on {device}")
    with warnings.catch_warnings():  # torch.ao eager quantization is deprecated in favour of torchao
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(network, {nn.Linear}, dtype=torch.qint8)


def autocast_bf16(network: nn.Module, device: torch.device) -> nn.Module | None:
    """The network under bf16 autocast, or None (float32 runs) where the device has no native bf16."""
    return Bf16Network(network) if bf16_supported(device) else None


# precision -> (float32 network, device) -> the network to run instead, or None when it falls back to float32
LOWER_PRECISIONS: dict[str, Callable[[nn.Module, torch.device], nn.Module | None]] = {
    "int8": dynamic_int8,
    "bf16": autocast_bf16,
}


def batched_probabilities(
    network: nn.Module,
    encoded: Sequence[Encoded],
    budget: int,
    collate: Callable[[list[dict[str, list[int]]]], dict[str, torch.Tensor]],
    device: torch.device,
    amp: torch.dtype | None,
) -> tuple[np.ndarray, np.ndarray]:
    """(strategy, commitment) probabilities of the encoded rows, in batches of at most `budget` padded tokens,
    under autocast to `amp` when given; the network's train/eval mode is restored afterwards."""
    n = len(encoded)
    strategy = np.zeros((n, len(STRATEGY_LABELS)), dtype=np.float64)
    commitment = np.zeros((n, len(COMMITMENT_LABELS)), dtype=np.float64)
    if not n:
        return strategy, commitment
    batches = token_budget_batches([len(e.input_ids) for e in encoded], budget)
    was_training = network.training
    network.eval()
    with torch.inference_mode():
        for rows in batches:
            batch = {k: t.to(device) for k, t in collate([features(encoded[i]) for i in rows]).items()}
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                logits_c, logits_s = network(**batch)
            commitment[rows] = torch.softmax(logits_c.float(), dim=-1).cpu().numpy()
            strategy[rows] = torch.sigmoid(logits_s.float()).cpu().numpy()
    network.train(was_training)
    return strategy, commitment
