"""A model study: variants of one config trained on their own data, scored once on dev, compared in pairs.

Each variant is the study config with some `--set`-style overrides (another model, other training sources,
other settings). Every variant is fitted by the same code as the train stage, so it learns nothing from dev;
dev scores each one once, with document-bootstrap intervals, and every variant is compared with the
reference variant over the same document resamples. Choosing among variants is a choice learned from data
too, so it is not made on dev either: a share of the gold training documents (`study.selection_fraction`) is
held out from every variant and scored as the selection set; with `study.cv_folds`, every variant is also
scored by document-grouped cross-validation over all of that source's documents, a larger and steadier
selection set. The table marks the variant that does best by cross-validation where it was run, otherwise on
the held-out documents. One MLflow run per variant (in the experiment `study-<config name>`), and a Markdown table that
docs/results.md takes as it is.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from rich.console import Console

from pipeline.config import PipelineConfig, load_config
from pipeline.config_sections import StudyVariant
from pipeline.evaluate import evaluate_model
from pipeline.labelled_data import (
    grouped_folds,
    grouped_split,
    in_document_order,
    read_labelled,
    read_training_data,
    sentence_texts,
)
from pipeline.metrics import head_macro_f1, paired_differences, pooled_head_macro_f1
from pipeline.models.base import build_model
from pipeline.schema import HeadProbabilities, LabelledSentence

console = Console(stderr=True)

HEADS = ("commitment_macro_f1", "strategy_macro_f1")


@dataclass(frozen=True)
class VariantResult:
    """One variant's dev scores (with intervals), paired differences against the reference, and costs."""

    name: str
    description: str
    overrides: tuple[str, ...]
    train_sentences: int
    fit_seconds: float
    metrics: dict[str, float]
    selection: dict[str, float]  # head macro-F1 on the held-out selection documents (empty: no selection set)
    paired: dict[str, tuple[float, float, float]]  # head -> (difference, ci_low, ci_high) vs the reference
    cross_validated: dict[str, float] = field(default_factory=dict)  # head macro-F1, k-fold CV (empty: not run)


def result_from_run(logged: dict) -> VariantResult:
    """A `VariantResult` back from what `tracking_results.log_study_variant` logged (see `run_history.study_runs`)."""
    metrics = logged["metrics"]
    overrides = logged["overrides"]
    return VariantResult(
        name=logged["name"],
        description=logged["description"],
        overrides=() if overrides in ("", "(base)") else (overrides,),
        train_sentences=int(metrics.get("train_sentences", 0)),
        fit_seconds=float(metrics.get("fit_seconds", 0.0)),
        metrics={k.removeprefix("dev_"): v for k, v in metrics.items() if k.startswith("dev_")},
        selection={k.removeprefix("selection_"): v for k, v in metrics.items() if k.startswith("selection_")},
        cross_validated={k.removeprefix("cv_"): v for k, v in metrics.items() if k.startswith("cv_")},
        paired={
            head: (
                metrics[f"paired.{head}.diff"],
                metrics[f"paired.{head}.ci_low"],
                metrics[f"paired.{head}.ci_high"],
            )
            for head in HEADS
        },
    )


def variant_config(config: PipelineConfig, variant: StudyVariant) -> PipelineConfig:
    """The study config with the variant's overrides applied (validated as any config is)."""
    if config.source_file is None:
        raise ValueError("a study needs a config file (its variants are overrides of it)")
    return load_config(config.source_file, [*config.overrides, *variant.set])


def selection_documents(config: PipelineConfig) -> list[LabelledSentence]:
    """The sentences of the held-out selection documents: `study.selection_fraction` of the documents of the
    study config's first training source, drawn by `study.selection_seed` (none when the fraction is 0)."""
    study = config.study
    assert study is not None
    if study.selection_fraction == 0:
        return []
    first_source, _ = read_training_data(config.data.train[:1])
    _, held_out = grouped_split(first_source, study.selection_fraction, study.selection_seed)
    return in_document_order(held_out)


def fit_variant(
    config: PipelineConfig, held_out: frozenset[str] = frozenset()
) -> tuple[object, list[LabelledSentence], float]:
    """Fit the variant's model on its training sources, less the held-out documents; (model, training
    sentences, seconds)."""
    train, _ = read_training_data(config.data.train)
    train = [s for s in train if s.doc_id not in held_out]
    model, seconds = _fit(config, train)
    return model, train, seconds


def _fit(config: PipelineConfig, train: Sequence[LabelledSentence]) -> tuple[object, float]:
    started = time.perf_counter()
    model = build_model(config.train.model)
    model.fit(train)
    return model, time.perf_counter() - started


def run_study(
    config: PipelineConfig, log_variant: object | None = None, only: Sequence[str] = ()
) -> list[VariantResult]:
    """Fit and score the variants (those named in `only`, or all), always with the reference variant first,
    so the others can be paired with it."""
    study = config.study
    assert study is not None
    unknown = sorted(set(only) - {v.name for v in study.variants})
    if unknown:
        raise ValueError(f"unknown study variant(s) {unknown}; the study has {[v.name for v in study.variants]}")
    dev = in_document_order(read_labelled(config.data.dev))
    texts = sentence_texts(dev)
    selection = selection_documents(config)
    held_out = frozenset(s.doc_id for s in selection)
    if selection:
        console.print(
            f"[bold]study[/bold] selection set: {len(selection)} sentences of {len(held_out)} documents of "
            f"{config.data.train[0].path}, held out from every variant"
        )
    chosen = [v for v in study.variants if not only or v.name in only or v.name == study.reference]
    ordered = sorted(chosen, key=lambda v: v.name != study.reference)
    reference_probs: HeadProbabilities | None = None
    results: list[VariantResult] = []
    for i, variant in enumerate(ordered, 1):
        console.print(f"[bold]study[/bold] {i}/{len(ordered)} {variant.name}: {' '.join(variant.set) or '(base)'}")
        variant_cfg = variant_config(config, variant)
        model, train, seconds = fit_variant(variant_cfg, held_out)
        probabilities = model.predict_proba(texts)  # type: ignore[attr-defined]
        report = evaluate_model(model, dev, variant_cfg.evaluate, variant.name)  # type: ignore[arg-type]
        if reference_probs is None:
            reference_probs = probabilities
        differences = paired_differences(
            dev,
            probabilities,
            reference_probs,
            metrics=HEADS,
            samples=variant_cfg.evaluate.bootstrap_samples,
            seed=variant_cfg.evaluate.seed,
        )
        result = VariantResult(
            name=variant.name,
            description=variant.description,
            overrides=tuple(variant.set),
            train_sentences=len(train),
            fit_seconds=seconds,
            metrics=report.metrics,
            selection=selection_scores(model, selection),
            paired={h: (d.difference, d.ci_low, d.ci_high) for h, d in differences.items()},
            cross_validated=cross_validated_scores(variant_cfg, study.cv_folds, study.selection_seed),
        )
        console.print(
            f"[bold]study[/bold] {variant.name}: commitment {report.metrics['commitment_macro_f1']:.3f}, "
            f"strategy {report.metrics['strategy_macro_f1']:.3f} ({seconds:.0f} s)"
        )
        if callable(log_variant):
            log_variant(result, variant_cfg)
        results.append(result)
    return results


def selection_scores(model: object, selection: Sequence[LabelledSentence]) -> dict[str, float]:
    """Both heads' macro-F1 on the selection documents, by the model's own decision rule."""
    if not selection:
        return {}
    probabilities = model.predict_proba(sentence_texts(selection))  # type: ignore[attr-defined]
    return head_macro_f1(selection, probabilities)


def cross_validated_scores(config: PipelineConfig, folds: int, seed: int) -> dict[str, float]:
    """Both heads' macro-F1 by document-grouped k-fold cross-validation over the config's first training
    source: each fold is predicted by the variant fitted on everything else (its other sources included), and
    the folds' decisions are pooled. Empty when `folds` is 0."""
    if folds == 0:
        return {}
    first, _ = read_training_data(config.data.train[:1])
    first = in_document_order(first)
    train, _ = read_training_data(config.data.train)  # read once, not once per fold
    parts = []
    for k, (_, held_idx) in enumerate(grouped_folds(first, n_folds=folds, seed=seed), 1):
        held = [first[i] for i in held_idx]
        held_docs = frozenset(s.doc_id for s in held)
        model, seconds = _fit(config, [s for s in train if s.doc_id not in held_docs])
        parts.append((held, model.predict_proba(sentence_texts(held))))  # type: ignore[attr-defined]
        console.print(f"[bold]study[/bold]   cross-validation fold {k}/{folds} ({seconds:.0f} s)")
    return pooled_head_macro_f1(parts)


def selected_variant(results: Sequence[VariantResult]) -> str | None:
    """The variant with the best mean of the two heads' macro-F1 where the selection is made: by
    cross-validation among the variants that have it, otherwise on the held-out selection documents."""
    for scores_of in (lambda r: r.cross_validated, lambda r: r.selection):
        scored = [r for r in results if all(h in scores_of(r) for h in HEADS)]
        if scored:
            return max(scored, key=lambda r: sum(scores_of(r)[h] for h in HEADS)).name
    return None


def merge_results(earlier: Sequence[VariantResult], latest: Sequence[VariantResult]) -> list[VariantResult]:
    """Earlier results (e.g. from the study's MLflow runs) updated by the latest, in the study's order."""
    by_name = {r.name: r for r in earlier} | {r.name: r for r in latest}
    return list(by_name.values())


def in_study_order(results: Sequence[VariantResult], config: PipelineConfig) -> list[VariantResult]:
    """The reference first, then the variants as the study config lists them (unknown names dropped), each
    described as the config describes it now."""
    assert config.study is not None
    variants = {v.name: v for v in config.study.variants}
    names = [config.study.reference] + [n for n in variants if n != config.study.reference]
    by_name = {r.name: r for r in results}
    return [replace(by_name[n], description=variants[n].description) for n in names if n in by_name]


def _interval(metrics: dict[str, float], key: str) -> str:
    return f"{metrics[key]:.3f} [{metrics[f'{key}_ci_low']:.3f}, {metrics[f'{key}_ci_high']:.3f}]"


def _paired(value: tuple[float, float, float]) -> str:
    difference, low, high = value
    mark = " ✓" if low > 0 else (" ✗" if high < 0 else "")
    return f"{difference:+.3f} [{low:+.3f}, {high:+.3f}]{mark}"


def _pair(scores: dict[str, float]) -> str:
    if not all(h in scores for h in HEADS):
        return "—"
    return " / ".join(f"{scores[h]:.3f}" for h in HEADS)


def study_table(results: Sequence[VariantResult], reference: str, command: str) -> str:
    """The Markdown table of a study (dev macro-F1 with 95% document-bootstrap intervals)."""
    chosen = selected_variant(results)
    by_cv = any(r.cross_validated for r in results)
    where = "by cross-validation" if by_cv else "on the held-out documents"
    lines = [
        f"Produced by `{command}`. Dev scored once per variant; nothing was chosen on dev. Intervals: 95%,",
        f"documents resampled; paired differences against `{reference}` on the same resamples",
        "(✓ interval above zero, ✗ below). `selection`: commitment / strategy macro-F1 on the gold training",
        "documents held out from every variant; `cv`: the same by document-grouped cross-validation over all gold",
        f"training documents (where run); ★ marks the best mean {where}, the study's pick"
        + (f" (`{chosen}`)." if chosen else "."),
        "",
        "| variant | what | train sentences | selection | cv | commitment macro-F1 | strategy macro-F1 | "
        "Δ commitment | Δ strategy | commitment ECE | fit s |",
        "|---|---|---:|---|---|---|---|---|---|---:|---:|",
    ]
    for r in results:
        star = " ★" if r.name == chosen else ""
        lines.append(
            f"| `{r.name}`{star} | {r.description} | {r.train_sentences} | {_pair(r.selection)} | "
            f"{_pair(r.cross_validated)} | {_interval(r.metrics, 'commitment_macro_f1')} | "
            f"{_interval(r.metrics, 'strategy_macro_f1')} | {_paired(r.paired['commitment_macro_f1'])} | "
            f"{_paired(r.paired['strategy_macro_f1'])} | {r.metrics['commitment_ece']:.3f} | {r.fit_seconds:.0f} |"
        )
    return "\n".join(lines) + "\n"


def write_table(path: Path, table: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(table, encoding="utf-8")
    return path
