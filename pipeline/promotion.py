"""The promotion gate: may a challenger replace the champion? A pure decision on two sets of metrics, and the
Markdown report that shows a reviewer the numbers side by side and why."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pipeline.config import PipelineConfig
from pipeline.config_sections import RetrainConfig

# The heads whose macro-F1 may not drop by more than `tolerance`, whatever the gate's metric is.
HEAD_METRICS: tuple[str, ...] = ("strategy_macro_f1", "commitment_macro_f1")
_EPSILON = 1e-12  # so that a gain of exactly the margin is not lost to float rounding


@dataclass(frozen=True)
class PromotionDecision:
    """The gate's verdict and, line by line, why."""

    promote: bool
    reasons: list[str]
    reference: str  # "champion", "baseline" or "none": what the challenger was measured against
    blocking: list[str] = field(default_factory=list)  # the reasons that stopped a promotion


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
    paired: Mapping[str, Mapping[str, float]] | None = None,
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
    ]
    if paired:
        lines += [
            "## Paired difference (challenger minus reference, documents resampled, 95% interval)",
            "",
            *[
                f"- {head}: {d['diff']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]"
                + (" (interval above zero)" if d["ci_low"] > 0 else "")
                for head, d in paired.items()
            ],
            "",
        ]
    lines += [
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
