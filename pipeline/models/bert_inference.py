"""The precisions a BERT model can label in besides float32, each as a copy of its network to run instead.

`BertTwoHeadModel.configure_inference` is the one place a precision is chosen; it looks the precision up in
`LOWER_PRECISIONS` and keeps the float32 network as the reference the lower precision is checked against.
A new backend (e.g. ONNX Runtime) is one more entry here.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn


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
