"""`pipeline report`: one self-contained HTML page that answers a researcher's first questions about a batch.

Which answers announce money, which only promise an inquiry, in which part of the strategy, per minister and
over time, and which sentences to check first. Plots are embedded PNGs and tables plain HTML, so the file
opens from disk, from a mail or from the MLflow UI (the label stage logs it) with no server. The numbers come
from `pipeline.review_answers`, the same functions notebook 02 calls.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from pipeline import review_answers, review_plots

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_PLOTTED_GROUPS = 40  # bars per chart; the tables hold every answer
REVIEW_ROWS = 25

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; line-height: 1.4; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2.2rem; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.6rem 0; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.5rem; vertical-align: top; text-align: left; }
th { background: #f3f3f3; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.text { min-width: 22rem; max-width: 48rem; }
.note { color: #555; font-size: 0.9rem; }
img { max-width: 100%; }
nav a { margin-right: 1rem; }
"""


@dataclass(frozen=True)
class ReportInputs:
    """A labelled batch as the report reads it: sentences (strategy as lists), per-answer facts, provenance."""

    sentences: pd.DataFrame
    facts: pd.DataFrame
    source: str
    model: str


def load_inputs(labelled: Path) -> ReportInputs:
    """Read a `pipeline label` output and the summary beside it."""
    sentences = review_answers.load_labelled(Path(labelled))
    facts = review_answers.answer_facts(sentences, review_answers.load_summary(Path(labelled)))
    model = ""
    if "model_name" in sentences and len(sentences):
        pairs = sorted({f"{n} v{v}" for n, v in zip(sentences["model_name"], sentences["model_version"], strict=True)})
        model = ", ".join(pairs)
    return ReportInputs(sentences, facts, str(labelled), model)


def write_report(labelled: Path, output: Path | None = None) -> Path:
    """Write the HTML report of a labelled batch (default: `<labelled stem>.report.html` beside it)."""
    labelled = Path(labelled)
    output = Path(output) if output else labelled.with_name(f"{labelled.stem}.report.html")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render(load_inputs(labelled)), encoding="utf-8")
    return output


def render(inputs: ReportInputs) -> str:
    """The whole page as one HTML string."""
    sentences, facts = inputs.sentences, inputs.facts
    answers = review_answers.answers_announcing(sentences, facts)
    found = review_answers.announcements(sentences, facts)
    by_minister = review_answers.commitment_by_strategy(sentences, facts, "minister")
    by_answer = review_answers.commitment_by_strategy(sentences, facts, "doc_id")
    over_time = review_answers.commitments_over_time(sentences, facts, "year")
    first = review_answers.review_first(sentences, REVIEW_ROWS)
    titles = facts.set_index("doc_id")["title"].to_dict()

    parts = [
        "<!DOCTYPE html>",
        '<html lang="sv"><head><meta charset="utf-8">',
        f"<title>Labelled answers: {_e(Path(inputs.source).name)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Labelled answers</h1>",
        f'<p class="note">{len(sentences):,} sentences in {len(facts):,} answers from <code>{_e(inputs.source)}</code>'
        + (f", labelled by {_e(inputs.model)}" if inputs.model else "")
        + f"; report written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Offsets <code>start–end</code> index the "
        "document text as the input holds it.</p>",
        "<nav>"
        + "".join(
            f'<a href="#{anchor}">{label}</a>'
            for anchor, label in (
                ("money", "Money and inquiries"),
                ("sentences", "The sentences"),
                ("ministers", "Per minister"),
                ("answers", "Per answer"),
                ("time", "Over time"),
                ("review", "Check these first"),
            )
        )
        + "</nav>",
        '<h2 id="money">Which answers announce money or promise an inquiry</h2>',
        '<p class="note">Sentences labelled <code>funding</code> (money) or <code>pending_proposal</code> '
        "(an inquiry, a bill or a proposal still to come), per answer.</p>",
        _table(answers, links={"doc_id": lambda v: f'<a href="#doc-{_anchor(v)}">{_e(v)}</a>'})
        if not answers.empty
        else "<p>No sentence in this batch was labelled funding or pending_proposal.</p>",
        '<h2 id="sentences">The sentences</h2>',
        '<p class="note">Each with the model\'s probability for its type; <em>where</em> is the document and the '
        "character offsets of the sentence in its text.</p>",
        _table(_with_where(found), text_columns=("text",)) if not found.empty else "<p>None.</p>",
        '<h2 id="ministers">Per minister: commitment types by strategy dimension</h2>',
        '<p class="note">Cells: sentences (share of the minister\'s sentences in that dimension). A sentence '
        "counts once for each dimension it has; <code>(none)</code>: no dimension.</p>",
        _figure(review_plots.plot_commitment_shares(_top(by_minister, "minister"), "minister", "Per minister")),
        _table(review_answers.commitment_by_strategy_wide(by_minister, "minister").reset_index()),
        '<h2 id="answers">Per answer: commitment types by strategy dimension</h2>',
        _figure(review_plots.plot_commitment_shares(_top(by_answer, "doc_id"), "doc_id", "Per answer")),
        _answers_table(review_answers.commitment_by_strategy_wide(by_answer, "doc_id"), titles),
        '<h2 id="time">Commitments over time</h2>',
        '<p class="note">Sentences per commitment type (not <code>none</code>) per year of the answer.</p>',
        _figure(review_plots.plot_over_time(over_time, "Commitment sentences per year")) if len(over_time) else "",
        _table(over_time.reset_index()),
        '<h2 id="review">Check these first</h2>',
        f'<p class="note">The {len(first)} least confident sentences: <code>confidence</code> is the lower of the '
        "commitment head's probability for its choice and the strategy head's least sure decision.</p>",
        _table(first.assign(strategy=first["strategy"].map(", ".join)), text_columns=("text",)),
        "</body></html>",
    ]
    return "\n".join(parts)


# --- pieces ---------------------------------------------------------------------------------------------


def _e(value: object) -> str:
    return html.escape("" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value))


def _anchor(value: object) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in str(value))


def _with_where(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out.insert(3, "where", [f"{d} [{s}–{e}]" for d, s, e in zip(out["doc_id"], out["start"], out["end"], strict=True)])
    return out.drop(columns=["doc_id", "start", "end"])


def _top(long: pd.DataFrame, by: str) -> pd.DataFrame:
    """The groups with the most sentences, so a chart stays readable; the table beside it has them all."""
    keep = long.groupby(by)["sentences"].sum().nlargest(MAX_PLOTTED_GROUPS).index
    return long[long[by].isin(keep)]


def _answers_table(wide: pd.DataFrame, titles: Mapping[str, object]) -> str:
    if wide.empty:
        return "<p>No sentences.</p>"
    table = wide.reset_index()
    table.insert(1, "title", [titles.get(d) for d in table["doc_id"]])
    firsts = ~table["doc_id"].duplicated()
    return _table(table, row_ids={i: f"doc-{_anchor(d)}" for i, d in enumerate(table["doc_id"]) if firsts[i]})


def _table(
    frame: pd.DataFrame,
    *,
    links: Mapping[str, Callable[[object], str]] | None = None,
    text_columns: tuple[str, ...] = (),
    row_ids: Mapping[int, str] | None = None,
) -> str:
    """An HTML table with every cell escaped (or built by `links`, which escape themselves)."""
    links = links or {}
    head = "".join(f"<th>{_e(c)}</th>" for c in frame.columns)
    rows = []
    for i, record in enumerate(frame.itertuples(index=False)):
        cells = []
        for column, value in zip(frame.columns, record, strict=True):
            if column in links:
                cells.append(f"<td>{links[column](value)}</td>")
            elif isinstance(value, float):
                cells.append(f'<td class="num">{"" if pd.isna(value) else f"{value:.3f}"}</td>')
            elif isinstance(value, int):
                cells.append(f'<td class="num">{value}</td>')
            else:
                css = ' class="text"' if column in text_columns else ""
                cells.append(f"<td{css}>{_e(value)}</td>")
        row_id = f' id="{row_ids[i]}"' if row_ids and i in row_ids else ""
        rows.append(f"<tr{row_id}>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _figure(figure: Figure) -> str:
    """A matplotlib figure as an embedded PNG (closed afterwards, so batch runs do not pile up figures)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return f'<img alt="chart" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'
