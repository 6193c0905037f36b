"""The review notebooks' and the labelling report's figures: each a matplotlib Figure drawn from one of the
tables of `pipeline.review_runs` and `pipeline.review_answers` (scores with intervals, per-class scores,
curves, commitment shares, counts)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import pandas as pd

from pipeline.schema import COMMITMENT_LABELS, STRATEGY_LABELS

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def plot_commitment_shares(long: pd.DataFrame, by: str, title: str) -> Figure:
    """Per group, stacked shares of commitment types in each strategy dimension (one panel per dimension)."""
    import matplotlib.pyplot as plt

    strategies = [s for s in (*STRATEGY_LABELS, "(none)") if s in set(long["strategy"])]
    groups = sorted(long[by].unique())
    figure, axes = plt.subplots(
        1, len(strategies), figsize=(4.2 * len(strategies), 0.45 * len(groups) + 2.6), sharey=True, squeeze=False
    )
    for ax, strategy in zip(axes.flat, strategies, strict=True):
        table = long[long["strategy"] == strategy].pivot_table(index=by, columns="commitment", values="share")
        table = table.reindex(index=groups, columns=list(COMMITMENT_LABELS)).fillna(0)
        table.plot.barh(ax=ax, stacked=True, legend=False, xlim=(0, 1), title=strategy, width=0.8)
        ax.set_xlabel("share of the dimension's sentences")
        ax.set_ylabel("")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False, fontsize=9)
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    return figure


def plot_over_time(table: pd.DataFrame, title: str) -> Figure:
    """Stacked bars of commitment types per period (`commitments_over_time`), legend below."""
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(max(6, 0.8 * len(table) + 3), 4))
    table.plot.bar(ax=ax, stacked=True, rot=0, legend=False, title=title)
    ax.set_ylabel("sentences")
    _legend_below(ax, columns=len(table.columns))
    figure.tight_layout()
    return figure


def plot_label_counts(counts: pd.DataFrame, title: str) -> Figure:
    """Two bar charts of a `label_counts` table: strategy dimensions beside stacked commitment types.

    Legends sit below the charts, never over the bars.
    """
    import matplotlib.pyplot as plt

    height = 0.4 * len(counts) + 2.6
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, height), sharey=True)
    counts[[*STRATEGY_LABELS, "no strategy"]].plot.barh(ax=left, title=f"{title}: strategy dimension", legend=False)
    counts[list(COMMITMENT_LABELS)].plot.barh(ax=right, stacked=True, title=f"{title}: commitment type", legend=False)
    for ax in (left, right):
        ax.set_xlabel("sentences")
        _legend_below(ax)
    figure.tight_layout()
    return figure


def _legend_below(ax: object, columns: int = 3) -> None:
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=columns, fontsize=8, frameon=False)  # type: ignore[attr-defined]


def plot_model_scores(scores: pd.DataFrame) -> Figure:
    """Macro-F1 per model and head (`model_scores`), one bar each with its 95% interval as an error bar."""
    import matplotlib.pyplot as plt
    import numpy as np

    table = scores.drop_duplicates(["model", "metric"], keep="first")
    models = sorted(table["model"].unique())
    metrics = sorted(table["metric"].unique())
    figure, ax = plt.subplots(figsize=(9, 0.6 * len(models) * len(metrics) + 1.8))
    height = 0.8 / max(len(metrics), 1)
    for j, metric in enumerate(metrics):
        rows = table[table["metric"] == metric].set_index("model").reindex(models)
        values = rows["value"].to_numpy(dtype=float)
        low = rows["ci_low"].astype(float).to_numpy()
        high = rows["ci_high"].astype(float).to_numpy()
        errors = np.vstack([np.nan_to_num(values - low), np.nan_to_num(high - values)])
        y = np.arange(len(models)) + (j - (len(metrics) - 1) / 2) * height
        ax.barh(y, values, height=height, xerr=errors, capsize=3, label=metric)
    ax.set_yticks(np.arange(len(models)), models)
    ax.set_xlim(0, 1)
    ax.set_xlabel("macro-F1 (bars: 95% document-bootstrap interval)")
    ax.set_title("Macro-F1 per model and head")
    _legend_below(ax, columns=len(metrics))
    figure.tight_layout()
    return figure


def plot_per_class(frame: pd.DataFrame, head: str) -> Figure:
    """F1 per class of one head (`per_class_scores` rows), one bar per model, legend below."""
    import matplotlib.pyplot as plt

    table = frame.pivot_table(index="label", columns="model", values="value", aggfunc="last")
    figure, ax = plt.subplots(figsize=(10, 4.2))
    table.plot.bar(ax=ax, ylim=(0, 1), rot=0, title=f"{head}: F1 per class", legend=False)
    ax.set_xlabel("")
    _legend_below(ax, columns=min(4, len(table.columns)))
    figure.tight_layout()
    return figure


def plot_curves(history: pd.DataFrame, run_names: Mapping[str, str]) -> Figure:
    """One panel per curve (`fetch_metric_history`), one line per run, the legend under each panel."""
    import matplotlib.pyplot as plt

    keys = sorted(history["key"].unique())
    columns = min(3, len(keys))
    rows = -(-len(keys) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 3.6 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        for run_id, curve in history[history["key"] == key].groupby("run_id"):
            ax.plot(curve["step"], curve["value"], marker="o", markersize=3, label=run_names.get(run_id, run_id[:8]))
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("step")
        _legend_below(ax, columns=2)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    figure.tight_layout()
    return figure
