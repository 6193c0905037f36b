"""The data behind the labelled-answers review (notebook 02 and `ct-pipeline report`): a labelling output
read back, each answer's facts (title, minister, date), and the tables researchers ask for first: money and
inquiries announced, commitment types per strategy dimension, per minister, over time, and the sentences a
reviewer should check first.

Functions named `load_*` read files; the rest are pure functions of data frames, drawn by
`pipeline.review_plots`.
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
)

# The columns the review reads from a labelled-sentences file (`pipeline.schema.LABELLED_ROW`); files labelled before
# the row gained `truncated`, the model columns and the document facts still load.
FACT_COLUMNS: tuple[str, ...] = tuple(name for name, _ in DOCUMENT_FACTS)
LABELLED_COLUMNS: tuple[str, ...] = tuple(
    c
    for c in LABELLED_ROW_COLUMNS
    if c not in ("start", "end", "role", "truncated", "model_name", "model_version", *FACT_COLUMNS)
)
_MONTHS = (
    "januari", "februari", "mars", "april", "maj", "juni",
    "juli", "augusti", "september", "oktober", "november", "december",
)  # fmt: skip
_DATELINE = re.compile(r"den (\d{1,2}) (" + "|".join(_MONTHS) + r") (\d{4})", re.IGNORECASE)


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
    out["commitment_confidence"] = out[list(COMMITMENT_PROBABILITY_COLUMNS)].max(axis=1)
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
