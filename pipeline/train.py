"""The train stage: fit the configured model and the baselines on labelled sentences, save each as a folder.

Pure of MLflow: the caller passes `on_epoch` for per-epoch metrics; logging and registering happen in
`pipeline.run`.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from pipeline.config import ModelSpec, TrainConfig
from pipeline.models.factory import build_model
from pipeline.schema import LabelledSentence

EpochCallback = Callable[[int, Mapping[str, float]], None]
console = Console(stderr=True)


@dataclass(frozen=True)
class TrainedModel:
    """A fitted model saved as a folder; `role` is `model` (the configured one) or `baseline`."""

    name: str
    kind: str
    role: str
    path: Path
    seconds: float


def model_folder_name(spec: ModelSpec, role: str) -> str:
    return "model" if role == "model" else f"baseline-{spec.kind}"


def fit_and_save(
    spec: ModelSpec,
    train: Sequence[LabelledSentence],
    dev: Sequence[LabelledSentence] | None,
    folder: Path,
    on_epoch: EpochCallback | None = None,
) -> Path:
    """Build the model a spec names, fit it (dev for early stopping and thresholds) and save it to `folder`."""
    model = build_model(spec)
    if on_epoch is not None and "on_epoch" in inspect.signature(model.fit).parameters:
        model.fit(train, dev, on_epoch=on_epoch)  # type: ignore[call-arg]
    else:
        model.fit(train, dev)
    model.save(folder)
    return folder


def train_models(
    cfg: TrainConfig,
    train: Sequence[LabelledSentence],
    dev: Sequence[LabelledSentence] | None,
    on_epoch: EpochCallback | None = None,
) -> list[TrainedModel]:
    """Fit the baselines (fast, first) and then the configured model; every one saved under `cfg.output_dir`."""
    jobs = [(spec, "baseline") for spec in cfg.baselines] + [(cfg.model, "model")]
    trained: list[TrainedModel] = []
    for spec, role in jobs:
        name = model_folder_name(spec, role)
        console.print(f"[bold]train[/bold] {name} ({spec.kind}) on {len(train)} sentences")
        started = time.perf_counter()
        folder = fit_and_save(spec, train, dev, Path(cfg.output_dir) / name, on_epoch if role == "model" else None)
        seconds = time.perf_counter() - started
        trained.append(TrainedModel(name, spec.kind, role, folder, seconds))
    return trained
