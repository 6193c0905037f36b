"""The train stage: fit the configured model and the baselines on labelled sentences, save each as a folder.

Pure of MLflow: the caller passes epoch callbacks for per-epoch metrics; logging and registering happen in
`pipeline.run`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from pipeline.models.base import EpochCallback, build_model
from pipeline.schema import LabelledSentence
from pipeline.training_config import ModelSpec, TrainConfig

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
    callbacks: Sequence[EpochCallback] = (),
) -> Path:
    """Build the model a spec names, fit it on `train` alone and save it to `folder`.

    `dev` is the set the model is reported on, so nothing is learned from it: every choice a model makes from
    data (epoch, thresholds, how to combine members) comes from its training documents (docs/results.md,
    "## Quality"). Dev only checks that a faster inference path gives float32's labels.
    """
    model = build_model(spec)
    model.fit(train, callbacks=callbacks)
    model.save(folder)
    if dev:  # fast inference paths for BERT, checked against float32 once, here, not at every labelling run
        for card in model.prepare_inference(folder, dev):
            console.print(f"[bold]train[/bold] inference path for labelling: {card['default']}")
    return folder


def training_jobs(cfg: TrainConfig) -> list[tuple[ModelSpec, str]]:
    """(spec, role) of every model the train stage fits: the baselines (fast, first), then the configured one."""
    return [(spec, "baseline") for spec in cfg.baselines] + [(cfg.model, "model")]


def train_model(
    cfg: TrainConfig,
    spec: ModelSpec,
    role: str,
    train: Sequence[LabelledSentence],
    dev: Sequence[LabelledSentence] | None,
    callbacks: Sequence[EpochCallback] = (),
) -> TrainedModel:
    """Fit one model of the stage and save it as `cfg.output_dir/<name>`; curves only for the configured model."""
    name = model_folder_name(spec, role)
    console.print(f"[bold]train[/bold] {name} ({spec.kind}) on {len(train)} sentences")
    started = time.perf_counter()
    folder = fit_and_save(spec, train, dev, Path(cfg.output_dir) / name, callbacks if role == "model" else ())
    return TrainedModel(name, spec.kind, role, folder, time.perf_counter() - started)


def train_models(
    cfg: TrainConfig,
    train: Sequence[LabelledSentence],
    dev: Sequence[LabelledSentence] | None,
    callbacks: Sequence[EpochCallback] = (),
) -> list[TrainedModel]:
    """Fit the baselines (fast, first) and then the configured model; every one saved under `cfg.output_dir`."""
    return [train_model(cfg, spec, role, train, dev, callbacks) for spec, role in training_jobs(cfg)]
