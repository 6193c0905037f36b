"""ONNX Runtime inference for the two-head BERT: exported once, fused, optionally int8, run batch by batch.

Why: on a CPU without AVX-512 (most laptops and cloud VMs), PyTorch runs the small BERT at about 1.5x a
transformers pipeline. ONNX Runtime with its BERT fusions (one Attention kernel per layer, fused embedding
LayerNorm, skip LayerNorm and bias-GELU) and per-channel dynamic int8 weights runs the same network several
times faster. The graph is built when the model is trained (see `pipeline.models.agreement`), stored in the
model folder, and only loaded at labelling time, so a short batch starts at full speed.

The int8 graph keeps the two heads (the layers that turn the sentence vector into labels) in float32 and uses
7-bit weight ranges (`reduce_range`), which avoids the int16 saturation of the u8s8 kernels on AVX2 CPUs
without VNNI; both choices keep labels closer to float32 at no measurable cost in speed.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ONNX_DIR = "onnx"  # inside a BERT model folder
FLOAT_GRAPH = "fp32.onnx"
INT8_GRAPH = "int8.onnx"
GRAPHS = {"onnx-fp32": FLOAT_GRAPH, "onnx-int8": INT8_GRAPH}
_HEADS = ("commitment", "strategy")
_OPSET = 17


class FastPathUnavailable(RuntimeError):
    """The ONNX path cannot run here (runtime missing, graph missing or unloadable); float32 is used instead."""


def runtime_available() -> bool:
    """Whether onnxruntime (and onnx, for building graphs) can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def _input_names(pooling: str) -> list[str]:
    names = ["input_ids", "attention_mask", "token_type_ids"]
    return [*names, "sentence_mask"] if pooling == "mean" else names


def _exportable(network: Any) -> Any:
    """The two-head network as a module of positional tensors (what the ONNX exporter traces)."""
    import torch

    class TwoHeadGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            batch = dict(zip(_input_names(network.pooling), tensors, strict=True))
            return self.network(**batch)

    return TwoHeadGraph().eval()


@contextlib.contextmanager
def _eager_attention(encoder: Any) -> Iterator[None]:
    """Export with the eager attention graph: the pattern ONNX Runtime's Attention fusion recognises."""
    previous = getattr(encoder.config, "_attn_implementation", None)
    switch = getattr(encoder, "set_attn_implementation", None)
    if switch is not None and previous not in (None, "eager"):
        switch("eager")
    try:
        yield
    finally:
        if switch is not None and previous not in (None, "eager"):
            switch(previous)


def export_float_graph(network: Any, folder: Path) -> Path:
    """Export the network (logits out) to `folder/fp32.onnx` and apply ONNX Runtime's BERT fusions to it."""
    import warnings

    import torch
    from onnxruntime.transformers import optimizer

    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / "raw.onnx"
    names = _input_names(network.pooling)
    example = tuple(torch.ones((2, 8), dtype=torch.long) for _ in names)
    was_training = network.training
    network.eval()
    try:
        with _eager_attention(network.encoder), warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notices
            torch.onnx.export(
                _exportable(network),
                example,
                str(raw),
                input_names=names,
                output_names=["commitment_logits", "strategy_logits"],
                dynamic_axes={
                    **{name: {0: "batch", 1: "tokens"} for name in names},
                    "commitment_logits": {0: "batch"},
                    "strategy_logits": {0: "batch"},
                },
                opset_version=_OPSET,
                dynamo=False,
            )
    finally:
        network.train(was_training)
    config = network.encoder.config
    fused = optimizer.optimize_model(
        str(raw), model_type="bert", num_heads=config.num_attention_heads, hidden_size=config.hidden_size, opt_level=0
    )
    target = folder / FLOAT_GRAPH
    fused.save_model_to_file(str(target))
    raw.unlink()
    return target


def fused_operators(graph: Path) -> dict[str, int]:
    """How many of each fused BERT operator a graph holds (an Attention count of 0 means fusion failed)."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(graph), load_external_data=False).graph.node:
        if node.domain == "com.microsoft":
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def quantize_int8(float_graph: Path, target: Path | None = None) -> Path:
    """Dynamic int8 with per-channel weights; the heads stay in float32 (they move labels the most)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = target or float_graph.with_name(INT8_GRAPH)
    graph = onnx.load(str(float_graph))
    heads = [node.name for node in graph.graph.node if any(f"/{head}/" in node.name for head in _HEADS)]
    quantize_dynamic(
        float_graph,
        target,
        per_channel=True,
        reduce_range=True,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=heads,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},  # outputs of fused ops have no inferred type
    )
    return target


class OnnxTwoHeadNetwork:
    """Stands in for the torch two-head network at inference: a batch of tensors in, two logit tensors out.

    `threads` bounds ONNX Runtime's intra-op pool (None: one per physical core, ONNX Runtime's default).
    """

    def __init__(self, graph: Path, pooling: str, threads: int | None = None) -> None:
        if not runtime_available():
            raise FastPathUnavailable("onnxruntime is not installed")
        import onnxruntime as ort

        if not Path(graph).is_file():
            raise FastPathUnavailable(f"{graph}: no such ONNX graph")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if threads is not None:
            options.intra_op_num_threads = max(1, threads)
        try:
            self.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # an op this runtime build lacks, a corrupt file: the caller falls back
            raise FastPathUnavailable(f"{graph}: ONNX Runtime cannot load it ({type(exc).__name__}: {exc})") from exc
        self.graph = Path(graph)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.pooling = pooling
        self.training = False

    def run(self, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Logits of both heads for a batch of int64 arrays (names as `collate` gives them)."""
        commitment, strategy = self.session.run(None, {name: batch[name] for name in self.inputs})
        return commitment, strategy

    def __call__(self, **batch: Any) -> tuple[Any, Any]:
        """The torch network's call (`network(**batch)`): tensors in, tensors out (zero-copy both ways)."""
        import torch

        arrays = {name: np.asarray(batch[name].numpy(), dtype=np.int64) for name in self.inputs}
        commitment, strategy = self.run(arrays)
        return torch.from_numpy(commitment), torch.from_numpy(strategy)

    def eval(self) -> OnnxTwoHeadNetwork:
        return self

    def train(self, mode: bool = True) -> OnnxTwoHeadNetwork:
        return self
