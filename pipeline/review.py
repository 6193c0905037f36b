"""The data behind the review notebooks: runs, curves, per-class scores, aliases and labelled answers.

The notebooks in `notebooks/` only choose parameters, call these functions and plot; everything that could
be wrong (which columns, which metric names, how confidence is measured) lives here, where it is tested.
Functions named `load_*` read files; the rest are pure functions of data frames, drawn by
`pipeline.review_plots`. What the notebooks read from MLflow comes from `pipeline.run_history`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from pipeline.schema import (
    COMMITMENT_LABELS,
    COMMITMENT_PROBABILITY_COLUMNS,
    DOCUMENT_FACTS,
    LABELLED_ROW_COLUMNS,
    STRATEGY_LABELS,
    STRATEGY_PROBABILITY_COLUMNS,
)

# The headline numbers of a run, as `pipeline.evaluate` names them (optionally behind a `<model>.` prefix).
KEY_METRICS: tuple[str, ...] = (
    "commitment_macro_f1",
    "strategy_macro_f1",
    "commitment_accuracy",
    "strategy_micro_f1",
    "commitment_ece",
)
# Config params worth a column in the runs table (those a run did not log are left out).
KEY_PARAMS: tuple[str, ...] = (
    "train.model.kind",
    "train.model.backbone",
    "train.model.context",
    "train.model.learning_rate",
    "train.model.epochs",
    "train.model.commitment_loss",
    "pretrain.mode",
    "data.train",
)
STRATEGY_PROBABILITIES = STRATEGY_PROBABILITY_COLUMNS
COMMITMENT_PROBABILITIES = COMMITMENT_PROBABILITY_COLUMNS
# The columns review reads from a labelled-sentences file (`pipeline.schema.LABELLED_ROW`); files labelled before
# the row gained `truncated`, the model columns and the document facts still load.
FACT_COLUMNS: tuple[str, ...] = tuple(name for name, _ in DOCUMENT_FACTS)
LABELLED_COLUMNS: tuple[str, ...] = tuple(
    c
    for c in LABELLED_ROW_COLUMNS
    if c not in ("start", "end", "role", "truncated", "model_name", "model_version", *FACT_COLUMNS)
)
_PER_CLASS = re.compile(
    r"^(?:(?P<model>.+)\.)?(?P<head>commitment|strategy)_(?P<measure>f1|precision|recall)_(?P<label>[a-z_]+)$"
)
_MONTHS = (
    "januari", "februari", "mars", "april", "maj", "juni",
    "juli", "augusti", "september", "oktober", "november", "december",
)  # fmt: skip
_DATELINE = re.compile(r"den (\d{1,2}) (" + "|".join(_MONTHS) + r") (\d{4})", re.IGNORECASE)


# --- experiments ----------------------------------------------------------------------------------------


def runs_table(
    runs: pd.DataFrame, metrics: Sequence[str] = KEY_METRICS, params: Sequence[str] = KEY_PARAMS
) -> pd.DataFrame:
    """One row per run: name, stage, status, duration, the key params and every key metric (prefixed too)."""
    if runs.empty:
        return pd.DataFrame(columns=["run_id", "run_name", "stage", "status", "start_time", "duration_s"])
    table = pd.DataFrame(
        {
            "run_id": runs["run_id"],
            "run_name": runs.get("tags.mlflow.runName"),
            "stage": runs.get("tags.stage"),
            "parent_run_id": runs.get("tags.mlflow.parentRunId"),
            "status": runs["status"],
            "start_time": runs["start_time"],
            "duration_s": (runs["end_time"] - runs["start_time"]).dt.total_seconds(),
        }
    )
    for param in params:
        if f"params.{param}" in runs:
            table[param] = runs[f"params.{param}"]
    metric_columns = [c for c in runs.columns if c.startswith("metrics.") and c.split(".")[-1] in metrics]
    for column in sorted(metric_columns):
        table[column.removeprefix("metrics.")] = runs[column]
    return table.dropna(axis=1, how="all").reset_index(drop=True)


def model_scores(
    runs: pd.DataFrame, metrics: Sequence[str] = ("commitment_macro_f1", "strategy_macro_f1")
) -> pd.DataFrame:
    """Each scored model's headline numbers: run_id, run_name, model, metric, value, ci_low, ci_high.

    An evaluate run that scored several models logs `<model>.<metric>`; a model's own run (tag `model`, one
    per trained model) logs `<metric>`. Unprefixed metrics of any other run (the pipeline run's headline copy)
    are not a model of their own and are left out.
    """
    rows = []
    for _, run in runs.iterrows():
        for column, value in run.items():
            if not (isinstance(column, str) and column.startswith("metrics.")) or pd.isna(value):
                continue
            key = column.removeprefix("metrics.")
            model, _, metric = key.rpartition(".")
            if metric not in metrics:
                continue
            model = model or _model_tag(run)
            if not model:
                continue
            rows.append(
                {
                    "run_id": run["run_id"],
                    "run_name": run.get("tags.mlflow.runName"),
                    "model": model,
                    "metric": metric,
                    "value": float(value),
                    "ci_low": run.get(f"{column}_ci_low"),
                    "ci_high": run.get(f"{column}_ci_high"),
                }
            )
    return pd.DataFrame(rows, columns=["run_id", "run_name", "model", "metric", "value", "ci_low", "ci_high"])


def per_class_scores(runs: pd.DataFrame, measure: str = "f1") -> pd.DataFrame:
    """Long table (run_id, run_name, model, head, label, value) of per-class scores of every scored model."""
    known = {"commitment": set(COMMITMENT_LABELS), "strategy": set(STRATEGY_LABELS)}
    rows = []
    for _, run in runs.iterrows():
        for column, value in run.items():
            if not (isinstance(column, str) and column.startswith("metrics.")) or pd.isna(value):
                continue
            match = _PER_CLASS.match(column.removeprefix("metrics."))
            if not match or match["measure"] != measure or match["label"] not in known[match["head"]]:
                continue
            model = match["model"] or _model_tag(run)
            if not model:
                continue
            rows.append(
                {
                    "run_id": run["run_id"],
                    "run_name": run.get("tags.mlflow.runName"),
                    "model": model,
                    "head": match["head"],
                    "label": match["label"],
                    "value": float(value),
                }
            )
    return pd.DataFrame(rows, columns=["run_id", "run_name", "model", "head", "label", "value"])


def _model_tag(run: pd.Series) -> str | None:
    value = run.get("tags.model")
    return value if isinstance(value, str) and value else None


def model_runs_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per trained model (its own run): settings, then the dev scores with their 95% intervals.

    The same row the MLflow UI shows for a model run: `kind` and the other spec params (ensemble members
    as `member0.*`), `fit_seconds`, and each headline metric as `value [low, high]` columns.
    """
    if runs.empty or "tags.model" not in runs:
        return pd.DataFrame(columns=["model", "role", "run_id"])
    models = runs[runs["tags.model"].notna()]
    table = pd.DataFrame({"model": models["tags.model"], "role": models.get("tags.role"), "run_id": models["run_id"]})
    for column in sorted(c for c in models.columns if c.startswith("params.")):
        table[column.removeprefix("params.")] = models[column]
    for metric in (*KEY_METRICS, "fit_seconds"):
        for suffix in ("", "_ci_low", "_ci_high"):
            column = f"metrics.{metric}{suffix}"
            if column in models:
                table[f"{metric}{suffix}"] = models[column]
    return table.dropna(axis=1, how="all").reset_index(drop=True)


def alias_versions(versions: pd.DataFrame, aliases: Sequence[str] = ("champion", "challenger")) -> pd.DataFrame:
    """Which version each alias points at, per registered model (a missing alias is absent)."""
    rows = []
    for _, row in versions.iterrows():
        held = [a.strip() for a in str(row["aliases"]).split(",") if a.strip()]
        rows += [
            {"name": row["name"], "alias": a, "version": row["version"], "run_id": row["run_id"]}
            for a in aliases
            if a in held
        ]
    return pd.DataFrame(rows, columns=["name", "alias", "version", "run_id"])


# --- labelled answers -----------------------------------------------------------------------------------


def _read_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix == ".jsonl":
        return pd.read_json(path, lines=True, dtype=False, convert_dates=False)  # values as written
    if suffix == ".csv":
        return pd.read_csv(path, keep_default_na=False)
    raise ValueError(f"{path}: unknown format {suffix!r}; expected .parquet, .jsonl or .csv")


def summary_path(labelled: Path) -> Path:
    """Where `pipeline.label` writes the per-document summary beside a labelled-sentences file."""
    labelled = Path(labelled)
    return labelled.with_name(f"{labelled.stem}.summary{labelled.suffix}")


def load_labelled(path: Path) -> pd.DataFrame:
    """A batch-labelling output (one row per sentence), with `strategy` as a list of labels."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: labelled-sentences file not found (run `pipeline label` first)")
    frame = _read_table(path)
    missing = [c for c in LABELLED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: not a labelled-sentences file; missing column(s) {missing}")
    frame["strategy"] = frame["strategy"].map(_strategy_list)
    return frame


def _strategy_list(value: object) -> list[str]:
    if isinstance(value, str):
        return [label for label in value.split(";") if label]
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return []
    return [str(label) for label in value]  # list, tuple or numpy array


def load_summary(path: Path) -> pd.DataFrame | None:
    """The per-document summary beside `path` (or at `path`), or None when there is none."""
    path = Path(path)
    candidate = path if ".summary" in path.name else summary_path(path)
    return _read_table(candidate) if candidate.is_file() else None


def answer_facts(sentences: pd.DataFrame, summary: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per answer: doc_id, title, minister, date, question_title, year.

    The rows' own columns (`title`, `date`, `minister`, `question_title`, written by `label`) win. Files
    labelled before those columns existed fall back to the summary's document metadata (`minister`, or
    `answer.minister`), then to the signature line and the dateline ("Stockholm den 12 mars 2025") that the
    segmenter marked.
    """
    facts = pd.DataFrame({"doc_id": pd.unique(sentences["doc_id"])})
    for column in FACT_COLUMNS:
        facts[column] = None
    role = sentences["role"] if "role" in sentences else pd.Series("", index=sentences.index)
    for i, doc_id in enumerate(facts["doc_id"]):
        rows = sentences[sentences["doc_id"] == doc_id]
        signature = rows[role.loc[rows.index] == "signature"]["text"]
        if len(signature):
            facts.at[i, "minister"] = str(signature.iloc[0]).strip()
        for text in rows[role.loc[rows.index] == "dateline"]["text"]:
            facts.at[i, "date"] = _dateline_iso(str(text))
    if summary is not None:
        by_doc = summary.set_index("doc_id")
        for i, doc_id in enumerate(facts["doc_id"]):
            if doc_id not in by_doc.index:
                continue
            row = by_doc.loc[doc_id]
            metadata = _metadata(row.get("metadata"))
            answer = metadata.get("answer") if isinstance(metadata.get("answer"), dict) else {}
            questions = [q.get("title") for q in answer.get("questions") or [] if isinstance(q, dict)]
            question_title = _first(row.get("question_title"), "; ".join(t for t in questions if t) or None)
            facts.at[i, "question_title"] = question_title
            facts.at[i, "title"] = _first(row.get("title"), metadata.get("title"), question_title)
            minister = _first(row.get("minister"), metadata.get("minister"), answer.get("minister"))
            facts.at[i, "minister"] = _first(minister, facts.at[i, "minister"])
            facts.at[i, "date"] = _first(row.get("date"), metadata.get("date"), facts.at[i, "date"])
    own = [c for c in FACT_COLUMNS if c in sentences.columns]
    if own:  # first value per answer that is present (groupby's `first` skips nulls)
        given = sentences.replace({c: {"": None} for c in own}).groupby("doc_id", sort=False)[own].first()
        for column in own:
            values = facts["doc_id"].map(given[column])
            facts[column] = [_first(v, old) for v, old in zip(values, facts[column], strict=True)]
    dates = pd.to_datetime(facts["date"], errors="coerce")
    facts["year"] = dates.dt.year.astype("Int64")
    facts["minister"] = facts["minister"].fillna("(unknown)")
    return facts


def _first(*values: object) -> object:
    """The first value that is present (not None, NaN or blank)."""
    for value in values:
        if value is None or (isinstance(value, float) and pd.isna(value)):
            continue
        if isinstance(value, str) and not value.strip():
            continue
        return value
    return None


def _metadata(value: object) -> dict:
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.strip():
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def _dateline_iso(text: str) -> str | None:
    match = _DATELINE.search(text)
    if not match:
        return None
    day, month, year = int(match[1]), _MONTHS.index(match[2].lower()) + 1, int(match[3])
    return f"{year:04d}-{month:02d}-{day:02d}"


def label_counts(sentences: pd.DataFrame, facts: pd.DataFrame, by: str = "doc_id") -> pd.DataFrame:
    """Sentences per strategy dimension and per commitment type, grouped by `by` (doc_id, minister or year).

    Columns: `sentences`, one per strategy label (a sentence counts once per dimension it has), `no strategy`,
    then one per commitment type.
    """
    if by not in ("doc_id", *facts.columns):
        raise ValueError(f"cannot group by {by!r}; choose doc_id or one of {list(facts.columns)}")
    frame = _with_facts(sentences, facts) if by != "doc_id" else sentences
    keys = frame[by].astype("string").fillna("(unknown)")
    out = pd.DataFrame({"sentences": frame.groupby(keys).size()})
    for label in STRATEGY_LABELS:
        out[label] = frame["strategy"].map(lambda labels, lab=label: lab in labels).groupby(keys).sum()
    out["no strategy"] = frame["strategy"].map(lambda labels: len(labels) == 0).groupby(keys).sum()
    for label in COMMITMENT_LABELS:
        out[label] = (frame["commitment"] == label).groupby(keys).sum()
    out.index.name = by
    return out.astype(int)


# --- what researchers ask first: money, inquiries, by strategy, by minister, over time ----------------------

# Commitment types that answer "which answers announce money / only promise an inquiry".
ANNOUNCEMENTS: tuple[str, ...] = ("funding", "pending_proposal")


def _with_facts(sentences: pd.DataFrame, facts: pd.DataFrame) -> pd.DataFrame:
    """The sentences with their answer's facts (which already settled the rows' own fact columns)."""
    own = [c for c in facts.columns if c != "doc_id" and c in sentences.columns]
    return sentences.drop(columns=own).merge(facts, on="doc_id", how="left")


def commitment_by_strategy(sentences: pd.DataFrame, facts: pd.DataFrame, by: str = "doc_id") -> pd.DataFrame:
    """Counts and shares of commitment types within each strategy dimension, per `by` (doc_id or minister).

    Long table: `by`, strategy (a sentence counts once per dimension it has; `(none)` when it has none),
    commitment, sentences, share (of that group's sentences in that dimension).
    """
    frame = _with_facts(sentences, facts)
    if by not in frame.columns:
        raise ValueError(f"cannot group by {by!r}; choose doc_id or one of {list(facts.columns)}")
    frame = frame.assign(strategy=frame["strategy"].map(lambda labels: list(labels) or ["(none)"]))
    exploded = frame.explode("strategy")
    exploded[by] = exploded[by].astype("string").fillna("(unknown)")
    counts = exploded.groupby([by, "strategy", "commitment"]).size().rename("sentences").reset_index()
    totals = counts.groupby([by, "strategy"])["sentences"].transform("sum")
    counts["share"] = counts["sentences"] / totals
    order = {label: i for i, label in enumerate((*STRATEGY_LABELS, "(none)"))}
    kinds = {label: i for i, label in enumerate(COMMITMENT_LABELS)}
    counts = counts.sort_values(
        [by, "strategy", "commitment"],
        key=lambda c: c.map(order) if c.name == "strategy" else (c.map(kinds) if c.name == "commitment" else c),
    )
    return counts.reset_index(drop=True)


def commitment_by_strategy_wide(long: pd.DataFrame, by: str = "doc_id") -> pd.DataFrame:
    """`commitment_by_strategy` as one row per (group, strategy dimension): `sentences`, then one column per
    commitment type reading `n (share%)`."""
    if long.empty:
        return pd.DataFrame()
    cells = long.assign(cell=[f"{n} ({share:.0%})" for n, share in zip(long["sentences"], long["share"], strict=True)])
    wide = cells.pivot_table(index=[by, "strategy"], columns="commitment", values="cell", aggfunc="first")
    wide = wide.reindex(columns=[c for c in COMMITMENT_LABELS if c in wide.columns]).fillna("")
    wide.insert(0, "sentences", long.groupby([by, "strategy"])["sentences"].sum())
    order = {label: i for i, label in enumerate((*STRATEGY_LABELS, "(none)"))}
    wide = wide.sort_index(level=[0, 1], key=lambda c: c.map(order) if c.name == "strategy" else c)
    wide.columns.name = None
    return wide


def announcements(sentences: pd.DataFrame, facts: pd.DataFrame, kinds: Sequence[str] = ANNOUNCEMENTS) -> pd.DataFrame:
    """The sentences that announce money or promise an inquiry, surest first, each pointing back to its text.

    Columns: commitment, confidence (the model's probability of that type), text, strategy, doc_id, start,
    end (offsets into the document text), title, minister, date.
    """
    frame = _with_facts(sentences, facts)
    frame = frame[frame["commitment"].isin(kinds)].copy()
    frame["confidence"] = [float(row[f"p_{row['commitment']}"]) for _, row in frame.iterrows()]
    frame["strategy"] = frame["strategy"].map(lambda labels: ", ".join(labels))
    columns = ["commitment", "confidence", "text", "strategy", "doc_id", "start", "end", "title", "minister", "date"]
    frame = frame.sort_values(["commitment", "confidence"], ascending=[True, False], kind="stable")
    return frame[[c for c in columns if c in frame.columns]].reset_index(drop=True)


def answers_announcing(
    sentences: pd.DataFrame, facts: pd.DataFrame, kinds: Sequence[str] = ANNOUNCEMENTS
) -> pd.DataFrame:
    """Per answer: title, minister, date and how many sentences of each announcing type it has (any > 0)."""
    frame = _with_facts(sentences, facts)
    counts = pd.crosstab(frame["doc_id"], frame["commitment"]).reindex(columns=list(kinds), fill_value=0)
    table = (
        facts.set_index("doc_id")[["title", "minister", "date"]].join(counts, how="left").fillna({k: 0 for k in kinds})
    )
    for kind in kinds:
        table[kind] = table[kind].astype(int)
    table = table[(table[list(kinds)] > 0).any(axis=1)]
    return table.sort_values(list(kinds), ascending=False).reset_index()


def commitments_over_time(sentences: pd.DataFrame, facts: pd.DataFrame, period: str = "year") -> pd.DataFrame:
    """Sentences per commitment type (not `none`) per period (`year` or `month`) of the answers' dates."""
    frame = _with_facts(sentences, facts)
    dates = pd.to_datetime(frame["date"], errors="coerce")
    if period == "month":
        keys = dates.dt.strftime("%Y-%m")
    elif period == "year":
        keys = dates.dt.year.astype("Int64").astype("string")
    else:
        raise ValueError(f"period must be 'year' or 'month', not {period!r}")
    keys = keys.fillna("(undated)")
    kinds = [k for k in COMMITMENT_LABELS if k != "none"]
    table = pd.crosstab(keys, frame["commitment"]).reindex(columns=kinds, fill_value=0)
    table.index.name = period
    return table.sort_index()


def sentence_confidence(sentences: pd.DataFrame) -> pd.DataFrame:
    """Adds `commitment_confidence`, `strategy_confidence`, `confidence` (their minimum) and `weakest_head`.

    Commitment confidence is the probability of the chosen type; a strategy decision's confidence is p when
    the label was given and 1 - p when it was not; the sentence's strategy confidence is its least sure one.
    """
    out = sentences.copy()
    out["commitment_confidence"] = out[list(COMMITMENT_PROBABILITIES)].max(axis=1)
    decisions = pd.DataFrame(
        {
            label: out[f"p_{label}"].where(out["strategy"].map(lambda ls, lab=label: lab in ls), 1 - out[f"p_{label}"])
            for label in STRATEGY_LABELS
        }
    )
    out["strategy_confidence"] = decisions.min(axis=1)
    out["confidence"] = out[["commitment_confidence", "strategy_confidence"]].min(axis=1)
    out["weakest_head"] = (out["strategy_confidence"] < out["commitment_confidence"]).map(
        {True: "strategy", False: "commitment"}
    )
    return out


def review_first(sentences: pd.DataFrame, n: int = 20) -> pd.DataFrame:
    """The `n` sentences a reviewer should check first: the least confident, with what the model decided."""
    scored = sentence_confidence(sentences)
    columns = [
        "doc_id",
        "index",
        "text",
        "strategy",
        "commitment",
        "confidence",
        "weakest_head",
        "commitment_confidence",
        "strategy_confidence",
    ]
    ranked = scored.sort_values(["confidence", "doc_id", "index"], kind="stable").head(n)
    return ranked[[c for c in columns if c in ranked.columns]].reset_index(drop=True)
