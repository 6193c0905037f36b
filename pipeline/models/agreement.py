"""The fast inference paths of a BERT model, checked against float32 once per model version.

When a BERT model is trained (or registered), `prepare_fast_inference` builds its ONNX graphs into the model
folder, labels the dev sentences with each and with PyTorch float32, and writes `inference.json`: per head,
the share of sentences whose label changed, and whether the path passed the tolerance (default 2% per head).
Graphs that failed are deleted. The label stage reads the card (`fast_path`) and runs the fastest path that
passed, with no check of its own, so a short batch starts at full speed.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.models.onnx_runtime import GRAPHS, ONNX_DIR
from pipeline.schema import HeadProbabilities, SentenceText

INFERENCE_CARD = "inference.json"
DEFAULT_TOLERANCE = 0.02
# Fastest first: where several passed, the label stage runs the first.
PREFERENCE = ("onnx-int8", "onnx-fp32")
_CARD_VERSION = 1


@dataclass(frozen=True)
class HeadAgreement:
    """Per head, the share of sentences whose label differs from float32 (strategy: any of its labels)."""

    sentences: int
    commitment_changed: float
    strategy_changed: float

    def passes(self, tolerance: float) -> bool:
        return self.commitment_changed <= tolerance and self.strategy_changed <= tolerance


def head_agreement(reference: HeadProbabilities, candidate: HeadProbabilities) -> HeadAgreement:
    """Compare two predictions of the same sentences, each head on its own decision rule."""
    n = len(reference.commitment)
    if n == 0:
        return HeadAgreement(0, 0.0, 0.0)
    commitment = reference.commitment.argmax(axis=1) != candidate.commitment.argmax(axis=1)
    thresholds = reference.strategy_thresholds[None, :]
    strategy = ((reference.strategy >= thresholds) != (candidate.strategy >= thresholds)).any(axis=1)
    return HeadAgreement(n, round(float(commitment.mean()), 5), round(float(strategy.mean()), 5))


def cpu_flags() -> list[str]:
    """The CPU's SIMD extensions that decide kernel choice (AVX2, AVX-512 subsets, AMX), from /proc/cpuinfo."""
    wanted = ("avx2", "avx512", "amx", "avx_vnni")
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return sorted({f for f in line.split(":", 1)[1].split() if f.startswith(wanted)})
    except OSError:
        pass
    return []


def prepare_fast_inference(
    model: Any,
    folder: Path,
    dev: Sequence[SentenceText],
    tolerance: float = DEFAULT_TOLERANCE,
    candidates: Sequence[str] = PREFERENCE,
) -> dict[str, Any]:
    """Build the ONNX graphs of a saved BERT model in `folder`, measure them on `dev` and write the card.

    `model` is the fitted `BertTwoHeadModel` that was saved to `folder`. Returns the card. Any failure to
    build a path (runtime missing, export error) is recorded in the card as that path's `error`; the model
    then labels in float32.
    """
    from pipeline.models.onnx_runtime import (
        OnnxTwoHeadNetwork,
        export_float_graph,
        fused_operators,
        quantize_int8,
        runtime_available,
    )

    folder = Path(folder)
    onnx_dir = folder / ONNX_DIR
    card: dict[str, Any] = {
        "version": _CARD_VERSION,
        "tolerance": tolerance,
        "dev_sentences": len(dev),
        "measured_on": {"machine": platform.machine(), "cpu_flags": cpu_flags()},
        "paths": {},
    }
    reference = model.predict_proba(dev)
    paths: dict[str, dict[str, Any]] = card["paths"]
    if not runtime_available():
        paths.update({name: {"error": "onnxruntime is not installed"} for name in candidates})
    else:
        try:
            started = time.perf_counter()
            float_graph = export_float_graph(model.network, onnx_dir)
            card["export_seconds"] = round(time.perf_counter() - started, 1)
            card["fused_operators"] = fused_operators(float_graph)
            if "onnx-int8" in candidates:
                quantize_int8(float_graph)
        except Exception as exc:  # an unsupported op, an exporter bug: recorded, the model still works
            paths.update({name: {"error": f"{type(exc).__name__}: {exc}"} for name in candidates})
        for name in candidates:
            if name in paths:
                continue
            graph = onnx_dir / GRAPHS[name]
            try:
                fast = model.with_network(OnnxTwoHeadNetwork(graph, model.spec.pooling, model.spec.threads))
                agreement = head_agreement(reference, fast.predict_proba(dev))
            except Exception as exc:
                paths[name] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            paths[name] = {
                **asdict(agreement),
                "passed": agreement.passes(tolerance),
                "graph": f"{ONNX_DIR}/{graph.name}",
            }
    chosen = next((name for name in PREFERENCE if paths.get(name, {}).get("passed")), "float32")
    card["default"] = chosen
    for name, graph_file in GRAPHS.items():  # keep only the graph the label stage will run
        if name != chosen:
            (onnx_dir / graph_file).unlink(missing_ok=True)
    if onnx_dir.is_dir() and not any(onnx_dir.iterdir()):
        onnx_dir.rmdir()
    (folder / INFERENCE_CARD).write_text(json.dumps(card, indent=2))
    return card


def read_card(folder: Path) -> dict[str, Any] | None:
    """The folder's `inference.json`, or None when the model was saved without one."""
    path = Path(folder) / INFERENCE_CARD
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def fast_path(folder: Path | None, threads: int | None = None) -> tuple[str, Any | None, str | None, float | None]:
    """(precision, network, notice, disagreement) for labelling a BERT model saved in `folder`.

    The network is an `OnnxTwoHeadNetwork` for the stored path that passed its agreement check, with the
    larger of its two heads' stored label changes; otherwise it is None (run the float32 PyTorch network) and
    `notice` says why in one line.
    """
    from pipeline.models.onnx_runtime import FastPathUnavailable, OnnxTwoHeadNetwork

    if folder is None:
        return "float32", None, "fast path off: the model was not loaded from a folder; labelling in float32", None
    card = read_card(folder)
    if card is None:
        return "float32", None, f"fast path off: {folder} has no {INFERENCE_CARD}; labelling in float32", None
    chosen = card.get("default", "float32")
    if chosen == "float32":
        failed = ", ".join(
            f"{name}: {info.get('error') or _changed(info)}" for name, info in card.get("paths", {}).items()
        )
        return "float32", None, f"fast path off: no path passed the stored agreement check ({failed}); float32", None
    info = card["paths"][chosen]
    pooling = json.loads((Path(folder) / "model.json").read_text())["spec"].get("pooling", "cls")
    try:
        network = OnnxTwoHeadNetwork(Path(folder) / info["graph"], pooling, threads)
    except FastPathUnavailable as exc:
        return "float32", None, f"fast path off: {exc}; labelling in float32", None
    return chosen, network, None, max(info["commitment_changed"], info["strategy_changed"])


def _changed(info: dict[str, Any]) -> str:
    return f"commitment {info['commitment_changed']:.1%}, strategy {info['strategy_changed']:.1%} changed"
