"""Scheduled retraining: train a challenger, score it against the champion, move `champion` only via the gate.

Safe to run unattended: a file lock keeps two runs from overlapping, unchanged labelled data skips the work,
and the `champion` alias is the last thing touched, so a run that dies anywhere before leaves it as it was.
The gate and its report are `pipeline.promotion`; the lock and the state between runs `pipeline.retrain_state`.

Exit codes (also `RetrainOutcome.exit_code`):
    0   promoted        the challenger passed the gate and is now `champion`
    10  not promoted    the challenger was trained, registered as `challenger`, and failed the gate
    11  skipped         the labelled data has the same digest as at the last completed run (use --force)
    75  locked          another retrain holds the lock (EX_TEMPFAIL: try again later)
    1   failed          anything else; the message says what, the champion is untouched
"""

from __future__ import annotations

import logging
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from pipeline.config import PipelineConfig
from pipeline.models.base import SentenceModel
from pipeline.promotion import HEAD_METRICS, PromotionDecision, decide_promotion, render_report
from pipeline.retrain_state import (
    RetrainLocked,
    data_digest,
    last_completed,
    retrain_lock,
    retrain_lock_path,
    write_state,
)
from pipeline.schema import LabelledSentence
from pipeline.training_config import TfidfSpec

log = logging.getLogger(__name__)


class RetrainStatus(StrEnum):
    PROMOTED = "promoted"
    NOT_PROMOTED = "not_promoted"
    SKIPPED = "skipped"
    LOCKED = "locked"
    FAILED = "failed"


EXIT_CODES: dict[RetrainStatus, int] = {
    RetrainStatus.PROMOTED: 0,
    RetrainStatus.NOT_PROMOTED: 10,
    RetrainStatus.SKIPPED: 11,
    RetrainStatus.LOCKED: 75,
    RetrainStatus.FAILED: 1,
}


@dataclass
class RetrainOutcome:
    status: RetrainStatus
    message: str
    challenger_version: int | None = None
    champion_version: int | None = None  # the champion after the run
    decision: PromotionDecision | None = None
    report: Path | None = None
    run_id: str | None = None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]


def _ensure_stderr_logging() -> None:
    if not logging.getLogger().handlers and not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s retrain %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


# --- scoring --------------------------------------------------------------------------------------------


def score(
    model: SentenceModel,
    sentences: Sequence[LabelledSentence],
    config: PipelineConfig,
    role: str,
    out_dir: Path,
    log_files: bool = True,
) -> dict[str, float]:
    """Score one model with the shared harness; log metrics and (unless told not to) files under `role`."""
    from pipeline import tracking_results
    from pipeline.evaluate import evaluate_model
    from pipeline.reports import write_report

    report = evaluate_model(model, sentences, config.evaluate, name=role)
    tracking_results.log_evaluation(report, write_report(report, out_dir / role) if log_files else [], prefix=role)
    return dict(report.metrics)


def paired_gain(
    challenger: SentenceModel, reference: SentenceModel, sentences: Sequence[LabelledSentence], config: PipelineConfig
) -> dict[str, dict[str, float]]:
    """Challenger minus reference per head, with a 95% interval over the same document resamples."""
    from pipeline.labelled_data import in_document_order, sentence_texts
    from pipeline.metrics import paired_differences

    ordered = in_document_order(sentences)
    texts = sentence_texts(ordered)
    differences = paired_differences(
        ordered,
        challenger.predict_proba(texts),
        reference.predict_proba(texts),
        metrics=HEAD_METRICS,
        samples=config.evaluate.bootstrap_samples,
        seed=config.evaluate.seed,
    )
    return {h: {"diff": d.difference, "ci_low": d.ci_low, "ci_high": d.ci_high} for h, d in differences.items()}


# --- the run --------------------------------------------------------------------------------------------


def retrain(config: PipelineConfig) -> RetrainOutcome:
    """One unattended retraining round; never raises, the outcome's status and exit code say what happened."""
    _ensure_stderr_logging()
    try:
        with retrain_lock(retrain_lock_path(config)):
            outcome = _retrain_locked(config)
    except RetrainLocked as exc:
        outcome = RetrainOutcome(RetrainStatus.LOCKED, str(exc))
    except Exception as exc:  # an unattended run must end with an exit code, not a traceback
        log.exception("retrain failed")
        outcome = RetrainOutcome(RetrainStatus.FAILED, f"retrain failed: {type(exc).__name__}: {exc}")
    level = logging.ERROR if outcome.status is RetrainStatus.FAILED else logging.INFO
    log.log(level, "%s (exit %d)", outcome.message, outcome.exit_code)
    return outcome


def _eval_path(config: PipelineConfig) -> Path:
    return Path(config.retrain.eval_data or config.data.dev)


def _load_data(
    config: PipelineConfig,
) -> tuple[list[LabelledSentence], list[LabelledSentence], list[LabelledSentence]]:
    """Train, dev and the frozen evaluation set, validated together (no document on both sides)."""
    from pipeline.labelled_data import LabelledDataError, check_splits

    eval_path = _eval_path(config)
    splits: dict[str, list[Path]] = {"train": list(config.data.train), "dev": [config.data.dev]}
    if eval_path != Path(config.data.dev):
        splits["eval"] = [eval_path]
    data, problems = check_splits(splits)
    if problems:
        raise LabelledDataError(problems)
    for split, sentences in data.items():
        if not sentences:
            raise ValueError(f"{', '.join(map(str, splits[split]))}: split {split!r} has no labelled sentences")
    return data["train"], data["dev"], data.get("eval", data["dev"])


def _baseline_spec(config: PipelineConfig) -> TfidfSpec:
    for spec in config.train.baselines:
        if isinstance(spec, TfidfSpec):
            return spec
    return TfidfSpec()


def _retrain_locked(config: PipelineConfig) -> RetrainOutcome:
    from pipeline import registry, tracking

    cfg = config.retrain
    name = config.tracking.registered_model
    tracking.configure_tracking(config.tracking, config.experiment_name())  # a dead server fails here, first

    train, dev, frozen = _load_data(config)
    eval_path = _eval_path(config)
    files = [*config.data.train_files, Path(config.data.dev)]
    files += [eval_path] if eval_path not in files else []
    digest = data_digest(files)
    last = last_completed(config)
    if last.get("data_digest") == digest and not cfg.force:
        return RetrainOutcome(
            RetrainStatus.SKIPPED,
            f"labelled data unchanged since {last.get('finished_at', 'the last run')} "
            f"(digest {digest[:12]}); nothing to do (use --force to retrain anyway)",
            champion_version=registry.get_alias_version(name, registry.CHAMPION),
        )

    with tracking.pipeline_run(config, run_name="retrain") as run, tempfile.TemporaryDirectory() as tmp:
        try:
            return _train_score_decide(config, run.info.run_id, Path(tmp), train, dev, frozen, eval_path, digest)
        except Exception as exc:  # the run is marked FAILED by MLflow; say why where a reviewer looks
            tracking.set_tags({"retrain.error": f"{type(exc).__name__}: {exc}"[:5000]})
            raise


def _train_score_decide(
    config: PipelineConfig,
    run_id: str,
    tmp: Path,
    train: list[LabelledSentence],
    dev: list[LabelledSentence],
    frozen: list[LabelledSentence],
    eval_path: Path,
    digest: str,
) -> RetrainOutcome:
    from pipeline import registry, tracking, tracking_datasets
    from pipeline.models.base import load_model
    from pipeline.models.factory import build_model
    from pipeline.train import fit_and_save

    cfg = config.retrain
    name = config.tracking.registered_model
    tracking.set_tags({"stage": "retrain", "retrain.data_digest": digest})
    tracking_datasets.log_training_sources(config.data.train)
    tracking_datasets.log_dataset(dev, "dev", "dev", Path(config.data.dev))
    tracking_datasets.log_dataset(frozen, "eval", "eval", eval_path)
    log.info("training challenger (%s) on %d sentences", config.train.model.kind, len(train))
    with tracking.stage_run(config, "train"):
        challenger_dir = fit_and_save(
            config.train.model, train, dev, tmp / "challenger", callbacks=[tracking.epoch_logger()]
        )
        challenger = load_model(challenger_dir)  # score exactly what gets registered
        _, version = registry.publish_model(
            challenger_dir,
            artifact="model",
            title=f"{name} (retrain challenger)",
            kind=config.train.model.kind,
            segment_cfg=config.segment,
            data={"train": f"{len(train)} sentences", "dev": f"{len(dev)} sentences"},
            metrics=score(challenger, dev, config, "dev", tmp / "dev", log_files=False),
            registered_model=name,
            tags={"source": "retrain", "data_digest": digest[:16]},
        )
        assert version is not None  # registered_model was given
    log.info("registered %s version %d as %s", name, version, registry.CHALLENGER)

    champion_version = registry.get_alias_version(name, registry.CHAMPION)
    metrics: dict[str, dict[str, float]] = {}
    with tracking.stage_run(config, "evaluate"):
        out = tmp / "evaluation"
        metrics["challenger"] = score(challenger, frozen, config, "challenger", out)
        if champion_version is not None:
            folder = registry.download_model_folder(
                registry.model_version_uri(name, champion_version), tmp / "champion"
            )
            reference = load_model(folder)
            metrics["champion"] = score(reference, frozen, config, "champion", out)
        else:
            reference = build_model(_baseline_spec(config)).fit(train)  # like every model: nothing from dev
            metrics["baseline"] = score(reference, frozen, config, "baseline", out)
        paired = paired_gain(challenger, reference, frozen, config)
        tracking.log_metrics(
            {f"paired.{head}.{field}": value for head, values in paired.items() for field, value in values.items()}
        )

    decision = decide_promotion(metrics["challenger"], metrics.get("champion"), metrics.get("baseline"), cfg)
    report = render_report(
        config=config,
        challenger_version=version,
        champion_version=champion_version,
        eval_path=eval_path,
        eval_size=len(frozen),
        digest=digest,
        metrics=metrics,
        decision=decision,
        paired=paired,
    )
    report_path = Path(cfg.report)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(report, encoding="utf-8")
    tracking.log_text(report, "retrain_report.md")
    tracking.set_tags({"retrain.promoted": str(decision.promote).lower(), "retrain.challenger_version": version})
    # the one step that changes what production uses; everything before it can fail harmlessly
    if decision.promote:
        registry.set_champion(name, version)
    write_state(
        cfg.state_file,
        {
            "data_digest": digest,
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "challenger_version": version,
            "promoted": decision.promote,
            "run_id": run_id,
        },
    )

    if decision.promote:
        status, message = RetrainStatus.PROMOTED, f"promoted {name} version {version} to {registry.CHAMPION}"
        champion_after: int | None = version
    else:
        status = RetrainStatus.NOT_PROMOTED
        message = f"{name} version {version} stays {registry.CHALLENGER}: {'; '.join(decision.blocking)}"
        champion_after = champion_version
    return RetrainOutcome(status, message, version, champion_after, decision, report_path, run_id, metrics)


# --- the report -----------------------------------------------------------------------------------------
