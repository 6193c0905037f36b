"""Scheduled retraining: train a challenger, score it against the champion, move `champion` only via the gate.

Safe to run unattended: a file lock keeps two runs from overlapping, unchanged labelled data skips the work,
and the `champion` alias is the last thing touched, so a run that dies anywhere before leaves it as it was.

Exit codes (also `RetrainOutcome.exit_code`):
    0   promoted        the challenger passed the gate and is now `champion`
    10  not promoted    the challenger was trained, registered as `challenger`, and failed the gate
    11  skipped         the labelled data has the same digest as at the last completed run (use --force)
    75  locked          another retrain holds the lock (EX_TEMPFAIL: try again later)
    1   failed          anything else; the message says what, the champion is untouched
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import IO

from pipeline.config import PipelineConfig, RetrainConfig, TfidfSpec
from pipeline.io.atomic import write_text_atomic
from pipeline.models.base import SentenceModel
from pipeline.schema import LabelledSentence

log = logging.getLogger(__name__)

# The heads whose macro-F1 may not drop by more than `tolerance`, whatever the gate's metric is.
HEAD_METRICS: tuple[str, ...] = ("strategy_macro_f1", "commitment_macro_f1")
_EPSILON = 1e-12  # so that a gain of exactly the margin is not lost to float rounding


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


@dataclass(frozen=True)
class PromotionDecision:
    """The gate's verdict and, line by line, why."""

    promote: bool
    reasons: list[str]
    reference: str  # "champion", "baseline" or "none": what the challenger was measured against
    blocking: list[str] = field(default_factory=list)  # the reasons that stopped a promotion


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


class RetrainLocked(RuntimeError):
    """Another retrain run holds the lock file."""


# --- the gate (pure) ------------------------------------------------------------------------------------


def decide_promotion(
    challenger: Mapping[str, float],
    champion: Mapping[str, float] | None,
    baseline: Mapping[str, float] | None,
    cfg: RetrainConfig,
) -> PromotionDecision:
    """Promote only if the challenger beats the reference on `cfg.metric` by at least `cfg.margin` and loses
    no more than `cfg.tolerance` on any head's macro-F1. The reference is the champion, or, with no champion
    yet, the TF-IDF baseline; with neither, nothing is promoted.
    """
    if champion is not None:
        reference, name = champion, "champion"
    elif baseline is not None:
        reference, name = baseline, "baseline"
    else:
        why = "no champion and no baseline to compare with"
        return PromotionDecision(False, [why], "none", [why])

    for key in {cfg.metric, *HEAD_METRICS}:
        for who, metrics in (("challenger", challenger), (name, reference)):
            if key not in metrics:
                raise KeyError(f"metric {key!r} missing from the {who}'s evaluation; has {sorted(metrics)}")

    reasons: list[str] = []
    blocking: list[str] = []
    gain = challenger[cfg.metric] - reference[cfg.metric]
    enough = gain >= cfg.margin - _EPSILON
    reason = (
        f"{cfg.metric}: challenger {challenger[cfg.metric]:.4f} vs {name} {reference[cfg.metric]:.4f} "
        f"(gain {gain:+.4f} {'≥' if enough else '<'} margin {cfg.margin:.4f})"
    )
    reasons.append(reason)
    if not enough:
        blocking.append(reason)
    for head in HEAD_METRICS:
        drop = reference[head] - challenger[head]
        if drop > cfg.tolerance + _EPSILON:
            reason = (
                f"{head}: challenger {challenger[head]:.4f} is {drop:.4f} below the {name} "
                f"({reference[head]:.4f}), more than the tolerance {cfg.tolerance:.4f}"
            )
            blocking.append(reason)
        else:
            reason = f"{head}: challenger {challenger[head]:.4f} vs {name} {reference[head]:.4f} (within tolerance)"
        reasons.append(reason)
    return PromotionDecision(not blocking, reasons, name, blocking)


# --- unattended-run plumbing ----------------------------------------------------------------------------


def retrain_lock_path(config: PipelineConfig) -> Path:
    """One lock per tracking store and registered model, whichever config or folder a retrain starts from.

    Two retrains of the same registered model must never overlap (both could move `champion`), even from
    different configs. The lock sits next to a sqlite store's database; for a server it is a per-user file on
    this machine (`~/.cache/ct-pipeline/locks`); retrains on different machines against one server need the
    scheduler to keep them apart.
    """
    from pipeline import tracking

    uri = tracking.resolve_tracking_uri(config.tracking)
    name = config.tracking.registered_model
    db = tracking.sqlite_path(uri)
    store = str(db.resolve()) if db is not None else uri.rstrip("/")
    key = hashlib.sha256(f"{store}\n{name}".encode()).hexdigest()[:16]
    folder = db.resolve().parent if db is not None else Path.home() / ".cache" / "ct-pipeline" / "locks"
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name)
    return folder / f"retrain-{slug}-{key}.lock"


@contextmanager
def retrain_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive, non-blocking `flock` on `path`; the kernel drops it when the process dies."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle: IO[str] = path.open("a+")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise RetrainLocked(
                f"another retrain is running (lock {path} held by pid {holder}); not starting a second one"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the lock


def data_digest(paths: Sequence[Path]) -> str:
    """sha256 over the labelled files (train, dev, evaluation set): unchanged data, nothing to retrain."""
    from pipeline.tracking import file_digest

    return file_digest(list(paths))


def read_state(path: Path) -> dict[str, object]:
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: retrain state is not valid JSON ({exc.msg}); delete it to start afresh") from None
    return state if isinstance(state, dict) else {}


def write_state(path: Path, state: Mapping[str, object]) -> None:
    """Atomic replace, so a crash never leaves half a state file."""
    write_text_atomic(Path(path), json.dumps(dict(state), indent=2))


def last_completed(config: PipelineConfig) -> dict[str, object]:
    """The last completed retrain: the state file, or else the newest finished `retrain` run in MLflow (so a
    CI runner that starts without the state file still skips unchanged data)."""
    state = read_state(config.retrain.state_file)
    if state.get("data_digest"):
        return state
    from pipeline import tracking

    run = tracking.last_finished_run(config.experiment_name(), "retrain.data_digest")
    if run is None:
        return {}
    finished = datetime.fromtimestamp((run.info.end_time or run.info.start_time) / 1000, UTC)
    return {
        "data_digest": run.data.tags["retrain.data_digest"],
        "finished_at": finished.isoformat(timespec="seconds"),
        "run_id": run.info.run_id,
    }


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
    from pipeline import tracking
    from pipeline.evaluate import evaluate_model
    from pipeline.reports import write_report

    report = evaluate_model(model, sentences, config.evaluate, name=role)
    tracking.log_evaluation(report, write_report(report, out_dir / role) if log_files else [], prefix=role)
    return dict(report.metrics)


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
    from pipeline import registry, tracking
    from pipeline.models.base import load_model
    from pipeline.models.factory import build_model
    from pipeline.train import fit_and_save

    cfg = config.retrain
    name = config.tracking.registered_model
    tracking.set_tags({"stage": "retrain", "retrain.data_digest": digest})
    tracking.log_training_sources(config.data.train)
    tracking.log_dataset(dev, "dev", "dev", Path(config.data.dev))
    tracking.log_dataset(frozen, "eval", "eval", eval_path)
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
            metrics["champion"] = score(load_model(folder), frozen, config, "champion", out)
        else:
            baseline = build_model(_baseline_spec(config)).fit(train, dev)
            metrics["baseline"] = score(baseline, frozen, config, "baseline", out)

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


def render_report(
    *,
    config: PipelineConfig,
    challenger_version: int,
    champion_version: int | None,
    eval_path: Path,
    eval_size: int,
    digest: str,
    metrics: Mapping[str, Mapping[str, float]],
    decision: PromotionDecision,
) -> str:
    """The Markdown report: what was compared, on what data, the numbers side by side, the verdict and why."""
    cfg = config.retrain
    name = config.tracking.registered_model
    verdict = "**promoted**" if decision.promote else "**not promoted**"
    against = (
        f"champion (version {champion_version})"
        if champion_version is not None
        else "TF-IDF baseline (no champion yet), trained on the same data"
    )
    lines = [
        f"# Retrain report: {name}",
        "",
        f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"- challenger: version {challenger_version} (`{config.train.model.kind}`), alias `challenger`",
        f"- compared with: {against}",
        f"- frozen evaluation set: `{eval_path}` ({eval_size} sentences)",
        f"- labelled data digest: `{digest[:16]}`",
        f"- gate: `{cfg.metric}` must improve by ≥ {cfg.margin}; "
        f"no head's macro-F1 may drop by more than {cfg.tolerance}",
        "",
        f"## Decision: {verdict}",
        "",
        *[f"- {reason}" for reason in decision.reasons],
        "",
        "## Metrics on the frozen evaluation set",
        "",
    ]
    columns = list(metrics)
    keys = sorted({k for m in metrics.values() for k in m}, key=lambda k: (k not in {cfg.metric, *HEAD_METRICS}, k))
    lines.append("| metric | " + " | ".join(columns) + " |")
    lines.append("|---|" + "---:|" * len(columns))
    for key in keys:
        cells = [f"{metrics[c][key]:.4f}" if key in metrics[c] else "" for c in columns]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)
