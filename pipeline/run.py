"""`pipeline run`: the stage list, one screen long.

Each stage edge below reads its inputs from the paths in the config, calls the stage's pure function, writes
its outputs to the configured paths (that is how artefacts pass between stages) and logs to MLflow. A
`pipeline run` is one parent MLflow run with a nested run per stage; a single stage gets the same shape.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from pipeline.config import ConfigError, PipelineConfig

# Logs and CI are not terminals; rich would then wrap the comparison tables at 80 columns.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_SOME_REJECTED = 3


@dataclass
class StageOutcome:
    stage: str
    exit_code: int = EXIT_OK
    outputs: dict[str, str] = field(default_factory=dict)
    message: str = ""


@dataclass
class RunOutcome:
    stages: list[StageOutcome] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        codes = [s.exit_code for s in self.stages]
        failed = [c for c in codes if c not in (EXIT_OK, EXIT_SOME_REJECTED)]
        return failed[0] if failed else max(codes, default=EXIT_OK)


# --- stage edges ----------------------------------------------------------------------------------------


def ingest_stage(config: PipelineConfig) -> StageOutcome:
    from pipeline import tracking
    from pipeline.ingest import ingest

    result = ingest(config.ingest)
    tracking.log_metrics({"documents": result.documents, "rejected_documents": result.rejects})
    tracking.log_file(result.rejects_path, "rejects")
    code = EXIT_SOME_REJECTED if result.rejects else EXIT_OK
    return StageOutcome(
        "ingest",
        code,
        {"documents": str(result.output), "rejects": str(result.rejects_path)},
        f"{result.documents} documents -> {result.output}; {result.rejects} rejected -> {result.rejects_path}",
    )


def segment_stage(config: PipelineConfig) -> StageOutcome:
    from pipeline import tracking
    from pipeline.segment import segment_stage as segment

    result = segment(config.segment)
    tracking.log_metrics({"documents": result.documents, "sentences": result.sentences, "rejected": result.rejects})
    tracking.log_file(Path(config.segment.rejects), "rejects")
    code = EXIT_SOME_REJECTED if result.rejects else EXIT_OK
    return StageOutcome(
        "segment",
        code,
        {"sentences": str(config.segment.output)},
        f"{result.documents} documents -> {result.sentences} sentences -> {config.segment.output}",
    )


def pretrain_stage(config: PipelineConfig) -> StageOutcome:
    from pipeline import tracking
    from pipeline.models.pretrain import pretrain_backbone

    result = pretrain_backbone(config.pretrain, on_metrics=lambda m, step: tracking.log_metrics(m, step=step))
    # the summary at the final step, each metric once: what the trainer's own curve already logged is kept
    tracking.log_new_metrics(
        {
            "heldout_loss": result.heldout_loss,
            "heldout_perplexity": result.heldout_perplexity,
            "steps": result.steps,
            "minutes": result.minutes,
        },
        step=result.steps,
    )
    tracking.log_metrics({"mean_steps_per_second": result.steps_per_second})
    for name in ("config.json", "tokenizer_config.json", "pretrain.json"):
        tracking.log_file(Path(result.output_dir) / name, "backbone")
    return StageOutcome(
        "pretrain",
        outputs={"backbone": str(result.output_dir)},
        message=f"{result.steps} steps, held-out perplexity {result.heldout_perplexity:.1f} -> {result.output_dir}",
    )


def train_stage(config: PipelineConfig) -> StageOutcome:
    from pipeline import registry, tracking, tracking_datasets
    from pipeline.evaluate import evaluate_model
    from pipeline.labelled_data import read_training_data
    from pipeline.models.base import load_model
    from pipeline.train import model_folder_name, train_model, training_jobs

    train, dev = read_training_data(config.data.train, config.data.dev)
    tracking_datasets.log_training_sources(config.data.train)
    if dev:
        tracking_datasets.log_dataset(dev, "dev", "dev", Path(config.data.dev))
    outputs: dict[str, str] = {}
    names = []
    for spec, role in training_jobs(config.train):
        # one nested run per model: its settings, its curves, its dev scores and its logged model together
        with tracking.model_run(model_folder_name(spec, role), tracking.model_params(spec), role):
            model = train_model(config.train, spec, role, train, dev, callbacks=[tracking.epoch_logger()])
            names.append(model.name)
            outputs[model.name] = str(model.path)
            report = evaluate_model(load_model(model.path), dev, config.evaluate, model.name) if dev else None
            scores = {**(tracking.headline(report.metrics) if report else {}), "fit_seconds": model.seconds}
            model_id = None
            if config.train.register_model:
                info, version = registry.publish_model(
                    model.path,
                    artifact=model.name,
                    title=f"{config.tracking.registered_model} ({model.name})",
                    kind=model.kind,
                    segment_cfg=config.segment,
                    data={
                        "train": _describe(config.data.train_files, train),
                        "dev": _describe([config.data.dev], dev or []),
                    },
                    metrics=report.metrics if report else {},
                    registered_model=config.tracking.registered_model if model.role == "model" else None,
                )
                model_id = info.model_id
                if version is not None:
                    outputs["registered_version"] = str(version)
                    console.print(
                        f"registered {config.tracking.registered_model} version {version} (alias {registry.CHALLENGER})"
                    )
            tracking.log_model_scores(scores, model_id=model_id)
            if model.role == "model":  # the pipeline run's row pairs the config with the model's scores
                tracking.log_pipeline_metrics(scores)
    return StageOutcome("train", outputs=outputs, message=f"trained {', '.join(names)}")


def evaluate_stage(config: PipelineConfig) -> StageOutcome:
    from pipeline import tracking, tracking_datasets, tracking_results
    from pipeline.evaluate import paired_comparison, score_models
    from pipeline.labelled_data import read_labelled
    from pipeline.models.base import MODEL_CARD_FILE
    from pipeline.reports import (
        PAIRED_FILE,
        PAIRED_JSON_FILE,
        comparison_markdown,
        comparison_table,
        paired_markdown,
        paired_table,
        write_report,
    )

    cfg = config.evaluate
    folders = [Path(p) for p in cfg.models] or sorted(
        p.parent for p in Path(config.train.output_dir).glob(f"*/{MODEL_CARD_FILE}")
    )
    if not folders:
        raise FileNotFoundError(
            f"evaluate: no saved models in {config.train.output_dir} (run `train` first or set evaluate.models)"
        )
    data_path = Path(cfg.data or config.data.dev)
    data = read_labelled(data_path)
    tracking_datasets.log_dataset(data, data_path.stem, "eval", data_path)
    scored = score_models(folders, data, cfg)
    reports = scored.reports
    out = Path(cfg.output_dir)
    for name, report in reports.items():
        tracking_results.log_evaluation(report, write_report(report, out / name), prefix=name)
    tracking.set_tags({"evaluate.threshold_rule": cfg.threshold_rule})
    comparison = comparison_markdown(reports)
    (out / "comparison.md").write_text(comparison + "\n", encoding="utf-8")
    tracking.log_text(comparison, "evaluation/comparison.md")
    console.print(comparison_table(reports))

    # paired comparison: skipped with a note when the default reference was not scored, refused when one was named
    for stale in (PAIRED_FILE, PAIRED_JSON_FILE):
        (out / stale).unlink(missing_ok=True)
    reference = cfg.reference
    if reference and reference not in reports and "reference" not in cfg.model_fields_set:
        console.print(f"no paired comparison: the default reference {reference!r} was not scored")
        reference = None
    if reference and len(reports) > 1 and cfg.bootstrap_samples > 0:
        paired = paired_comparison(scored, reference, cfg)
        markdown = paired_markdown(paired)
        (out / PAIRED_FILE).write_text(markdown + "\n", encoding="utf-8")
        (out / PAIRED_JSON_FILE).write_text(paired.model_dump_json(indent=2) + "\n", encoding="utf-8")
        tracking.log_text(markdown, f"evaluation/{PAIRED_FILE}")
        tracking.log_dict(paired.model_dump(mode="json"), f"evaluation/{PAIRED_JSON_FILE}")
        tracking.log_metrics(paired.flat_metrics())
        console.print(paired_table(paired))
    return StageOutcome("evaluate", outputs={"evaluation": str(out)}, message=f"scored {len(reports)} models")


def label_stage(config: PipelineConfig, sentences: Path | None = None) -> StageOutcome:
    """`sentences`: the segment stage's output for `label.input`, when this run made it (not segmented again)."""
    from pipeline import tracking
    from pipeline.io.documents import read_documents, read_sentences
    from pipeline.label import label_documents
    from pipeline.registry import resolve_model
    from pipeline.timing import time_line

    if config.label.engine == "spark":
        return _label_on_spark(config)
    model, info = resolve_model(config.label.model)
    documents = read_documents(Path(config.label.input))
    segmented = read_sentences(sentences) if sentences is not None else None
    result = label_documents(config.label, model, info, documents, config.segment, sentences=segmented)
    tracking.log_metrics(
        {
            "documents": result.documents,
            "labelled_documents": result.labelled,
            "sentences": result.sentences,
            "rejected_documents": result.rejected,
            "truncated_documents": result.warnings,
        }
    )
    tracking.log_stage_times(result.timings, result.sentences)
    console.print(time_line("label", result.timings, result.sentences), highlight=False, soft_wrap=True)
    tracking.set_tags({"label.model_name": info.name, "label.model_version": info.version})
    tracking.log_file(result.summary, "labelling")
    outputs = {"labelled": str(result.output), "summary": str(result.summary)}
    if result.sentences:  # the researcher's view of the batch, readable from the run's Artifacts tab
        from pipeline.report import write_report

        report = write_report(Path(result.output))
        tracking.log_file(report, "labelling")
        outputs["report"] = str(report)
    return StageOutcome(
        "label",
        result.exit_code,
        outputs,
        f"{result.sentences} sentences from {result.labelled} documents -> {result.output}"
        + (f"; {result.rejected} rejected" if result.rejected else ""),
    )


def pseudo_label_stage(config: PipelineConfig) -> StageOutcome:
    """Pseudo-labels from a saved teacher; the run's dev set is always left out unless told otherwise."""
    from pipeline import tracking
    from pipeline.pseudo_label import pseudo_label
    from pipeline.registry import resolve_model
    from pipeline.timing import time_line

    cfg = config.pseudo_label
    if not cfg.teacher.startswith(("models:/", "runs:/")) and not Path(cfg.teacher).is_dir():
        raise FileNotFoundError(
            f"pseudo_label.teacher {cfg.teacher!r}: no such model folder, and not a models:/ or runs:/ URI"
        )
    teacher, info = resolve_model(cfg.teacher)
    dev = [Path(config.data.dev)] if cfg.exclude_dev else []
    result = pseudo_label(cfg, teacher, info, config.segment, config.label, extra_exclude=dev)
    tracking.log_metrics(result.metrics())
    tracking.log_stage_times(result.timings, result.sentences_seen)
    tracking.set_tags({"pseudo_label.teacher": info.uri, "pseudo_label.teacher_version": info.version})
    tracking.log_file(result.summary, "pseudo_label")
    tracking.log_file(result.rejects, "pseudo_label")
    console.print(time_line("pseudo_label", result.timings, result.sentences_seen), highlight=False, soft_wrap=True)
    kept = ", ".join(f"{label} {n}" for label, n in result.kept_per_label["commitment"].items())
    return StageOutcome(
        "pseudo_label",
        EXIT_SOME_REJECTED if result.documents_rejected else EXIT_OK,
        {"pseudo_labels": str(result.output), "summary": str(result.summary), "rejects": str(result.rejects)},
        f"{result.documents_read} documents ({result.documents_excluded} excluded as labelled, "
        f"{result.documents_rejected} rejected): kept {result.sentences_kept} of {result.sentences_seen} sentences "
        f"at confidence >= {cfg.min_confidence:g} ({kept}) -> {result.output}",
    )


def _label_on_spark(config: PipelineConfig) -> StageOutcome:
    """The label stage on Apache Spark: the same files as the local engine, logged alike, plus Spark's pace."""
    from pipeline import tracking_results
    from pipeline.engines.spark import label_documents_spark

    result = label_documents_spark(config.label, config.segment, log=lambda line: console.print(line, highlight=False))
    tracking_results.log_labelling(result, config.label, engine="spark")
    return StageOutcome(
        "label",
        result.exit_code,
        {"labelled": str(result.output), "summary": str(result.summary)},
        f"{result.sentences} sentences from {result.labelled} documents -> {result.output} (Spark, "
        f"{result.rows_per_second:.0f} sentences/s)" + (f"; {result.rejected} rejected" if result.rejected else ""),
    )


STAGE_EDGES: dict[str, Callable[[PipelineConfig], StageOutcome]] = {
    "ingest": ingest_stage,
    "segment": segment_stage,
    "pretrain": pretrain_stage,
    "train": train_stage,
    "evaluate": evaluate_stage,
    "label": label_stage,
    "pseudo_label": pseudo_label_stage,
}


# --- the loop -------------------------------------------------------------------------------------------


def run_stages(config: PipelineConfig, stages: list[str]) -> RunOutcome:
    """Run `stages` in order under one parent MLflow run; stop at the first failed stage."""
    from pipeline import tracking
    from pipeline.registry import ModelNotFound

    outcome = RunOutcome()
    try:
        tracked = [s for s in stages if s != "retrain"]
        if not tracked:  # `pipeline_run` checks the store itself; retrain alone must fail fast here too
            tracking.configure_tracking(config.tracking, config.experiment_name())
        if tracked:
            with tracking.pipeline_run(config) as parent:
                console.print(f"MLflow run {parent.info.run_id} in experiment {config.experiment_name()!r}")
                for stage in tracked:
                    console.rule(f"[bold]{stage}")
                    edge = STAGE_EDGES[stage]
                    if stage == "label" and (segmented := _segmented_in_this_run(config, outcome)):
                        edge = functools.partial(label_stage, sentences=segmented)
                    with tracking.stage_run(config, stage):
                        result = edge(config)
                    outcome.stages.append(result)
                    console.print(f"[green]{stage}[/green]: {result.message}", highlight=False)
        if "retrain" in stages:  # the gate opens its own run, after the stages it may depend on
            outcome.stages.append(_retrain(config))
    except (ConfigError, FileNotFoundError, tracking.TrackingUnavailable, ModelNotFound, ValueError) as exc:
        if os.environ.get("PIPELINE_DEBUG"):
            raise
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        usage = ConfigError | tracking.TrackingUnavailable | ModelNotFound  # what the user asked for is not there
        code = EXIT_CONFIG if isinstance(exc, usage) else EXIT_FAILED
        outcome.stages.append(StageOutcome("error", code, message=str(exc)))
    return outcome


def _retrain(config: PipelineConfig) -> StageOutcome:
    from pipeline.retrain import retrain

    result = retrain(config)
    return StageOutcome("retrain", result.exit_code, message=result.message)


# --- small edges ----------------------------------------------------------------------------------------


def _segmented_in_this_run(config: PipelineConfig, outcome: RunOutcome) -> Path | None:
    """The sentences the segment stage wrote in this run, when they are of the documents label reads."""
    if not any(s.stage == "segment" for s in outcome.stages) or config.label.input is None:
        return None
    same_input = Path(config.label.input).resolve() == Path(config.segment.input).resolve()
    return Path(config.segment.output) if same_input and Path(config.segment.output).is_file() else None


def _describe(paths: list[Path], sentences: list) -> str:
    documents = len({s.doc_id for s in sentences})
    return f"{', '.join(map(str, paths))}: {len(sentences)} sentences, {documents} documents"


def study_command(config: PipelineConfig, command: str, only: Sequence[str] = ()) -> Path:
    """`ct-pipeline study`: the chosen variants trained, scored and logged (one run each); the table written
    from every variant's latest run in the study's experiment, so expensive variants can run one at a time."""
    from pipeline import run_history, study, tracking, tracking_results

    assert config.study is not None
    experiment = f"study-{config.experiment_name()}"
    tracking.configure_tracking(config.tracking, experiment)
    reference = config.study.reference

    def log_variant(result: study.VariantResult, variant_config: PipelineConfig) -> None:
        tracking_results.log_study_variant(result, variant_config, reference)

    earlier = [study.result_from_run(logged) for logged in run_history.study_runs(experiment, reference)]
    latest = study.run_study(config, log_variant, only)
    results = study.in_study_order(study.merge_results(earlier, latest), config)
    return study.write_table(config.study.table, study.study_table(results, reference, command))


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `python -m pipeline run`")
