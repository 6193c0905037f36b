"""Command line: argument parsing only. Every command loads a config and calls one stage (or the stage list)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from pipeline.config import ConfigError, PipelineConfig, check_inputs, load_config

app = typer.Typer(
    help="Label Swedish counter-terrorism policy texts sentence by sentence: strategy dimension "
    "(forebygga / forhindra / forsvara) and commitment type.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
annotate_app = typer.Typer(help="Annotation round trip: export for annotators, import labels, agreement.")
app.add_typer(annotate_app, name="annotate")
err = Console(stderr=True)

# Stages you try out default to the bundled sample; the two that act on real work (labelling a batch,
# promoting a model) must be told which config they serve, so a cron line without -c cannot relabel or
# retrain the sample.
DEFAULT_CONFIG = Path("configs/quickstart.yaml")
# A --set example that every shipped config accepts (tests/test_cli.py applies it to each).
SET_EXAMPLE = "evaluate.bootstrap_samples=200"
ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="YAML config (see configs/); default: the bundled quick-start sample.")
]
RequiredConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="YAML config (see configs/), e.g. configs/gold.yaml. Required.")
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        help=f"Override any config value, read as YAML: --set {SET_EXAMPLE} (repeatable; list items by index, "
        "train.model.members.0.epochs=4).",
    ),
]


def _config(path: Path, overrides: list[str] | None, stages: list[str]) -> PipelineConfig:
    try:
        config = load_config(path, overrides or [])
        check_inputs(config, stages)
    except ConfigError as exc:
        err.print(f"[red]config error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    return config


EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


def _run(config: PipelineConfig, stages: list[str]) -> None:
    """Run the stages; Ctrl-C ends with one line saying what was kept and how to go on (exit 130)."""
    from pipeline.run import run_stages

    try:
        outcome = run_stages(config, stages)
    except KeyboardInterrupt:
        err.print(f"interrupted: {_resume_hint(config, stages)}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    raise typer.Exit(outcome.exit_code)


def _resume_hint(config: PipelineConfig, stages: list[str]) -> str:
    hints = []
    if "label" in stages:
        partial = Path(config.label.output).with_name(f"{Path(config.label.output).name}.partial")
        hints.append(f"labelling keeps its committed chunks in {partial}")
    if "pretrain" in stages:
        hints.append(f"pretraining keeps its last checkpoint in {config.pretrain.output_dir}")
    kept = "; ".join(hints) + "; " if hints else ""
    return f"{kept}rerun the same command with the same arguments to resume"


def _stage(name: str, config_path: Path, overrides: list[str] | None) -> None:
    _run(_config(config_path, overrides, [name]), [name])


@app.command()
def ingest(config: ConfigOption = DEFAULT_CONFIG, set_: SetOption = None) -> None:
    """Read documents (JSONL, a folder of txt/md/html/docx, or a Riksdag query) into one documents JSONL.

    Unreadable or empty documents go to the rejects file with their reason.
    """
    _stage("ingest", config, set_)


@app.command()
def segment(config: ConfigOption = DEFAULT_CONFIG, set_: SetOption = None) -> None:
    """Clean documents and split them into sentences with offsets and roles (heading, question, body, ...)."""
    _stage("segment", config, set_)


@app.command()
def pretrain(config: ConfigOption = DEFAULT_CONFIG, set_: SetOption = None) -> None:
    """Masked-LM pretraining: a tokenizer and small BERT from scratch, or continued pretraining of a checkpoint.

    Checkpoints as it goes and resumes when rerun; reports held-out perplexity.
    """
    _stage("pretrain", config, set_)


@app.command()
def train(config: ConfigOption = DEFAULT_CONFIG, set_: SetOption = None) -> None:
    """Fit the two-head model and the baselines on labelled sentences; register the model as `challenger`."""
    _stage("train", config, set_)


@app.command()
def evaluate(config: ConfigOption = DEFAULT_CONFIG, set_: SetOption = None) -> None:
    """Score saved models on labelled data: macro-F1 with document-bootstrap intervals, calibration, errors."""
    _stage("evaluate", config, set_)


@app.command()
def label(
    config: RequiredConfigOption,
    set_: SetOption = None,
    model: Annotated[str | None, typer.Option(help="models:/<name>@champion, runs:/… or a folder.")] = None,
    input_: Annotated[Path | None, typer.Option("--input", help="Documents JSONL or a folder.")] = None,
    output: Annotated[Path | None, typer.Option(help="Output .parquet, .jsonl or .csv.")] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace a finished output that was written with other arguments.")
    ] = False,
    engine: Annotated[
        str | None, typer.Option(help="local (this process) or spark (label.spark.master; see docs/spark.md).")
    ] = None,
) -> None:
    """Batch-label documents: one row per sentence plus a per-document summary; resumable.

    Exit code 0 when every document was labelled whole; 3 when a document was rejected or a sentence (or a
    document over label.max_chars) was cut (see the rejects file); 2 when the arguments are refused.
    """
    overrides = list(set_ or [])
    for key, value in (
        ("label.model", model),
        ("label.input", input_),
        ("label.output", output),
        ("label.engine", engine),
    ):
        if value is not None:
            overrides.append(f"{key}={value}")
    if overwrite:
        overrides.append("label.overwrite=true")
    _stage("label", config, overrides)


@app.command("pseudo-label")
def pseudo_label(
    config: RequiredConfigOption,
    set_: SetOption = None,
    teacher: Annotated[
        str | None, typer.Option(help="The teacher: a saved model folder, models:/<name>@<alias> or runs:/….")
    ] = None,
) -> None:
    """Label unlabelled documents with a teacher and keep the sentences it is sure of on both heads, as a
    labelled JSONL that data.train takes as a weighted source (see data/README.md, "Pseudo-labels").

    Documents of the labelled files in pseudo_label.exclude (and of data.dev) are left out. Exit code 3 when a
    document was rejected (see the rejects file).
    """
    overrides = [*(set_ or []), *([f"pseudo_label.teacher={teacher}"] if teacher is not None else [])]
    _stage("pseudo_label", config, overrides)


@app.command()
def serve(
    config: ConfigOption = DEFAULT_CONFIG,
    set_: SetOption = None,
    model: Annotated[
        str | None, typer.Option(help="models:/<name>@<alias> (default: serve.model, else label.model).")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1: this machine only).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 5000).")] = None,
    max_request_bytes: Annotated[
        int | None, typer.Option(help="Refuse larger request bodies with 413, unread (default 4 MiB).")
    ] = None,
) -> None:
    """Serve the registered model over REST (MLflow's scoring server): POST documents or sentences, get rows.

    The rows are batch labelling's rows. Stops on Ctrl-C.
    """
    from pipeline import serve as serving
    from pipeline.pyfunc import ModelLoadError
    from pipeline.registry import ModelNotFound, pin_model_uri
    from pipeline.tracking import TrackingUnavailable, configure_tracking, redact

    overrides = list(set_ or [])
    for key, value in (("serve.model", model), ("serve.host", host), ("serve.port", port)):
        if value is not None:
            overrides.append(f"{key}={value}")
    if max_request_bytes is not None:
        overrides.append(f"serve.max_request_bytes={max_request_bytes}")
    pipeline_config = _config(config, overrides, [])
    cfg = pipeline_config.serve
    try:
        uri = configure_tracking(pipeline_config.tracking)
        served = pin_model_uri(cfg.model or pipeline_config.label.model)
    except (TrackingUnavailable, ModelNotFound) as exc:
        err.print(f"serve: {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    try:
        app_ = serving.build_app(served, cfg.max_request_bytes)
    except (ModelLoadError, OSError) as exc:
        err.print(f"serve: cannot load {served.requested}: {str(exc).splitlines()[0]}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    url = f"http://{cfg.host}:{cfg.port}"
    version = f" (version {served.version})" if served.version else ""
    where = f"serving {served.requested}{version} from {redact(uri)} at {url}/invocations"
    err.print(where, highlight=False, soft_wrap=True)
    err.print(f"example request:\n  {serving.example_request(url)}", highlight=False, soft_wrap=True)
    serving.serve(app_, cfg.host, cfg.port)


@app.command()
def report(
    labelled: Annotated[Path, typer.Argument(help="A `label` output: labelled sentences (.parquet/.jsonl/.csv).")],
    output: Annotated[Path | None, typer.Option(help="HTML file (default: <labelled>.report.html beside it).")] = None,
) -> None:
    """Write one self-contained HTML report of a labelled batch: which answers announce money or promise an
    inquiry (with the sentences and their offsets), commitment types by strategy dimension per minister and
    per answer, commitments over time, and the least confident sentences to check first."""
    from pipeline.report import write_report

    try:
        path = write_report(labelled, output)
    except (FileNotFoundError, ValueError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    err.print(f"wrote {path}")


@app.command()
def retrain(
    config: RequiredConfigOption,
    set_: SetOption = None,
    force: Annotated[bool, typer.Option(help="Train even if the labelled data has not changed.")] = False,
) -> None:
    """Train a challenger and promote it to `champion` only if it beats the champion on the gate.

    Exit codes: 0 promoted, 10 not promoted, 11 skipped (data unchanged), 75 another run holds the lock,
    1 failed. Safe to run from cron.
    """
    _stage("retrain", config, [*(set_ or []), *(["retrain.force=true"] if force else [])])


@app.command()
def study(
    config: ConfigOption,
    set_: SetOption = None,
    variant: Annotated[
        list[str] | None,
        typer.Option("--variant", help="Run only these variants (repeatable); the reference always runs too."),
    ] = None,
) -> None:
    """Train every variant a study config lists on its own data, score each once on dev, compare in pairs.

    One MLflow run per variant in the experiment `study-<config>`; the Markdown table (every variant's latest
    run) goes to `study.table`. Example: ct-pipeline study -c configs/study.yaml --variant stacker
    """
    cfg = _config(config, set_, [])
    if cfg.study is None:
        err.print(f"[red]config error:[/red] {config}: no `study` section (see configs/study.yaml)", soft_wrap=True)
        raise typer.Exit(2)
    from pipeline.run import study_command

    command = f"ct-pipeline study -c {config}" + "".join(f" --set {v}" for v in set_ or [])
    try:
        table = study_command(cfg, command, variant or [])
    except ValueError as exc:
        err.print(f"[red]study error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    err.print(f"study table written to {table}", highlight=False, soft_wrap=True)


@app.command()
def run(config: ConfigOption = DEFAULT_CONFIG, set_: SetOption = None) -> None:
    """Run the stages the config lists, in order, as one MLflow parent run with a nested run per stage."""
    cfg = _config(config, set_, [])
    try:
        check_inputs(cfg, list(cfg.stages))
    except ConfigError as exc:
        err.print(f"[red]config error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    _run(cfg, list(cfg.stages))


@annotate_app.command("export")
def annotate_export(
    sentences: Annotated[Path, typer.Argument(help="Sentences JSONL (segment output) or labelled JSONL.")],
    output: Annotated[Path, typer.Argument(help="CSV for annotators.")],
    model: Annotated[
        str | None, typer.Option(help="Add this model's predictions (folder or models:/ URI), most uncertain first.")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Export at most this many sentences.")] = None,
    with_labels: Annotated[bool, typer.Option(help="Keep existing labels (for review rounds).")] = False,
) -> None:
    """Write sentences with their neighbours (and optionally predictions) for annotators."""
    from pipeline.annotate.export import export_annotation_file

    loaded = None
    if model is not None:
        from pipeline.registry import resolve_model

        loaded, _ = resolve_model(model)
    count = export_annotation_file(sentences, output, model=loaded, include_labels=with_labels, limit=limit)
    err.print(f"wrote {count} sentences to {output}")


@annotate_app.command("import")
def annotate_import(
    annotated: Annotated[Path, typer.Argument(help="The CSV annotators filled in.")],
    into: Annotated[Path, typer.Argument(help="Labelled JSONL to merge into (created if absent).")],
    overwrite: Annotated[bool, typer.Option(help="Let new labels replace different existing ones.")] = False,
    other_split: Annotated[
        list[Path] | None, typer.Option(help="Labelled files of other splits: a document may not move between splits.")
    ] = None,
) -> None:
    """Validate annotated rows and merge them into a labelled JSONL; bad rows are reported by line."""
    from pipeline.annotate.merge import import_annotations
    from pipeline.labelled_data import LabelledDataError

    try:
        result = import_annotations(annotated, into, overwrite=overwrite, other_splits=other_split or ())
    except LabelledDataError as exc:
        for problem in exc.problems:
            err.print(str(problem), highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    err.print(str(result), highlight=False)


@annotate_app.command("agreement")
def annotate_agreement(
    first: Annotated[Path, typer.Argument(help="Labelled JSONL or annotated CSV from annotator A.")],
    second: Annotated[Path, typer.Argument(help="The same sentences from annotator B.")],
) -> None:
    """Cohen's kappa for commitment; per-label kappa and F1 for strategy."""
    from pipeline.annotate.agreement import agreement_between_files, agreement_table

    Console().print(agreement_table(agreement_between_files(first, second)))


@app.command("validate-data")
def validate_data(
    files: Annotated[list[Path], typer.Argument(help="Labelled JSONL files (splits).")],
) -> None:
    """Check labelled JSONL files: every bad line with its number; documents shared between files."""
    from pipeline.labelled_data import validate_files

    problems = validate_files(files)
    for problem in problems:
        err.print(str(problem), highlight=False)
    if problems:
        raise typer.Exit(1)
    err.print(f"[green]ok[/green]: {', '.join(map(str, files))}")


def _quiet_libraries() -> None:
    """Our own progress bars say what is happening; the libraries' per-file bars only bury them."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    _quiet_libraries()
    try:
        app()
    except KeyboardInterrupt:  # outside a stage (e.g. while importing); stages say how to resume
        err.print("interrupted")
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
