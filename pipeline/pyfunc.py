"""The registered model: an MLflow pyfunc that turns documents or sentences into labelled sentences.

It bundles everything a fresh process needs: the saved `SentenceModel` folder (weights, tokenizer,
thresholds), the segmenter settings, the label schema and the `pipeline` package source itself (`code_paths`).
Bundling the code pins the model to the code that trained it, so `models:/<name>@champion` loads and predicts
from its URI alone, even where the package is not installed; where `pipeline` is already imported in the
loading process, that copy is used (MLflow only prepends the bundled code to `sys.path`).

Input (a pandas DataFrame, one of):
- documents: columns `id`, `text` -> segmented with the bundled segmenter settings;
- sentences: columns `doc_id`, `text` (neighbours within a `doc_id` give context models their context);
- sentences: column `text` alone (each sentence on its own).

Output: one row per sentence with `doc_id, index, start, end, role, text, strategy` (`;`-joined labels),
`p_<strategy label>` for each strategy label, `commitment`, `p_<commitment label>` for each commitment label.
For documents, `start`/`end` are offsets into the cleaned document text (`pipeline.segment.clean_text`) and
an empty document yields no rows; for sentences they span the sentence itself (0, len(text)), role `body`.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.types import ColSpec, Schema

from pipeline import model_kinds as registry
from pipeline.config import SegmentConfig
from pipeline.schema import (
    COMMITMENT_LABELS,
    COMMITMENT_PROBABILITY_COLUMNS,
    STRATEGY_LABELS,
    STRATEGY_PROBABILITY_COLUMNS,
    Document,
    SentenceText,
    with_context,
)

if TYPE_CHECKING:
    from mlflow.models.model import ModelInfo

    from pipeline.models.base import SentenceModel

MODEL_ARTIFACT = "sentence_model"
SEGMENTER_ARTIFACT = "segmenter"
LABELS_ARTIFACT = "label_schema"
SEGMENTER_RUNTIME_FIELDS = ("join_hard_wrapped_lines", "detect_answer_structure", "max_sentence_chars")

# Constructed example (written for this project, not taken from any source).
INPUT_EXAMPLE = pd.DataFrame(
    {
        "id": ["exempel-1"],
        "text": [
            "Regeringen tillför 40 miljoner kronor till det förebyggande arbetet mot våldsbejakande "
            "extremism. En utredare ska se över reglerna för skydd av offentliga platser."
        ],
    }
)


def strategy_columns() -> list[str]:
    return list(STRATEGY_PROBABILITY_COLUMNS)


def commitment_columns() -> list[str]:
    return list(COMMITMENT_PROBABILITY_COLUMNS)


def output_columns() -> list[str]:
    return [
        "doc_id", "index", "start", "end", "role", "text",
        "strategy", *strategy_columns(), "commitment", *commitment_columns(),
    ]  # fmt: skip


def signature() -> ModelSignature:
    inputs = Schema(
        [
            ColSpec("string", "id", required=False),
            ColSpec("string", "doc_id", required=False),
            ColSpec("string", "text"),
        ]
    )
    outputs = Schema(
        [
            ColSpec("string", "doc_id"),
            ColSpec("long", "index"),
            ColSpec("long", "start"),
            ColSpec("long", "end"),
            ColSpec("string", "role"),
            ColSpec("string", "text"),
            ColSpec("string", "strategy"),
            *[ColSpec("double", c) for c in strategy_columns()],
            ColSpec("string", "commitment"),
            *[ColSpec("double", c) for c in commitment_columns()],
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


class BadModelInput(MlflowException, ValueError):
    """Input the pyfunc cannot label. MLflow's scoring server answers it with 400 and this message (any other
    error would reach the client as a generic "unexpected error")."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


class SentenceLabellerPyfunc(PythonModel):
    """Segments (if given documents), runs the bundled `SentenceModel`, and returns one row per sentence.

    After `load_context`, `sentence_model` and `segment_config` are available to in-process callers
    (`mlflow.pyfunc.load_model(uri).unwrap_python_model()`), e.g. for batched labelling.
    """

    sentence_model: SentenceModel
    segment_config: SegmentConfig

    def load_context(self, context: PythonModelContext) -> None:
        from pipeline.models.base import load_model

        schema = json.loads(Path(context.artifacts[LABELS_ARTIFACT]).read_text(encoding="utf-8"))
        expected = {"strategy": list(STRATEGY_LABELS), "commitment": list(COMMITMENT_LABELS)}
        if {k: schema.get(k) for k in expected} != expected:
            raise ValueError(
                f"model label schema {schema} does not match this code's labels {expected}; "
                "load it with the code bundled in the model"
            )
        segmenter = json.loads(Path(context.artifacts[SEGMENTER_ARTIFACT]).read_text(encoding="utf-8"))
        self.segment_config = SegmentConfig.model_validate(segmenter)
        self.sentence_model = load_model(Path(context.artifacts[MODEL_ARTIFACT]))

    def predict(
        self,
        context: PythonModelContext | None,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        try:
            rows = sentence_rows(model_input, self.segment_config)
        except ValueError as exc:
            raise BadModelInput(str(exc)) from exc
        return label_rows(self.sentence_model, rows)


def sentence_rows(frame: pd.DataFrame, segment_cfg: SegmentConfig) -> pd.DataFrame:
    """Documents or sentences in -> sentence rows (doc_id, index, start, end, role, text), document order."""
    if not isinstance(frame, pd.DataFrame):
        frame = pd.DataFrame(frame)
    if "text" not in frame.columns:
        raise ValueError(f"input needs a 'text' column (got columns {list(frame.columns)})")
    has_id, has_doc_id = "id" in frame.columns, "doc_id" in frame.columns
    if has_id and has_doc_id:
        raise ValueError("input has both 'id' (documents) and 'doc_id' (sentences); give one of them")
    bad = [i for i, t in enumerate(frame["text"]) if not isinstance(t, str)]
    if bad:
        raise ValueError(f"input column 'text' must hold strings; rows {bad[:10]} do not")
    if has_id:
        return _segment_documents(frame, segment_cfg)
    doc_ids = [str(d) for d in frame["doc_id"]] if has_doc_id else [""] * len(frame)
    index: list[int] = []
    seen: dict[str, int] = {}
    for doc_id in doc_ids:
        index.append(seen.get(doc_id, 0))
        seen[doc_id] = index[-1] + 1
    texts = list(frame["text"])
    return pd.DataFrame(
        {
            "doc_id": doc_ids,
            "index": index,
            "start": [0] * len(texts),
            "end": [len(t) for t in texts],
            "role": ["body"] * len(texts),
            "text": texts,
            "_context": [has_doc_id] * len(texts),
        }
    )


def _segment_documents(frame: pd.DataFrame, segment_cfg: SegmentConfig) -> pd.DataFrame:
    from pipeline.segment import EmptyDocumentError, segment_document

    records = []
    for doc_id, text in zip(frame["id"], frame["text"], strict=True):
        try:
            sentences = segment_document(Document(id=str(doc_id), text=text), segment_cfg)
        except EmptyDocumentError:
            continue  # nothing to label; the document simply has no rows
        for sentence in sentences:
            records.append(
                {
                    "doc_id": sentence.doc_id,
                    "index": sentence.index,
                    "start": sentence.start,
                    "end": sentence.end,
                    "role": sentence.role,
                    "text": sentence.text,
                    "_context": True,
                }
            )
    columns = ["doc_id", "index", "start", "end", "role", "text", "_context"]
    return pd.DataFrame.from_records(records, columns=columns)


def label_rows(model: SentenceModel, rows: pd.DataFrame) -> pd.DataFrame:
    """Run the model on sentence rows and add labels and both heads' probabilities."""
    out = rows.drop(columns="_context").reset_index(drop=True)
    for column in ("index", "start", "end"):
        out[column] = out[column].astype("int64")
    if out.empty:
        for column in output_columns():
            if column not in out.columns:
                out[column] = pd.Series(dtype="float64" if column.startswith("p_") else "object")
        return out[output_columns()]
    inputs: list[SentenceText] = []
    context = rows["_context"].to_numpy()
    pairs = list(zip(rows["doc_id"], rows["text"], strict=True))
    contextual = with_context(pairs)
    for i, (_, text) in enumerate(pairs):
        inputs.append(contextual[i] if context[i] else SentenceText(text=text))
    probs = model.predict_proba(inputs)
    out["strategy"] = [";".join(labels) for labels in probs.strategy_labels()]
    for j, column in enumerate(strategy_columns()):
        out[column] = np.asarray(probs.strategy[:, j], dtype="float64")
    out["commitment"] = probs.commitment_labels()
    for j, column in enumerate(commitment_columns()):
        out[column] = np.asarray(probs.commitment[:, j], dtype="float64")
    return out[output_columns()]


# --- logging --------------------------------------------------------------------------------------------

BASE_REQUIREMENTS = ("mlflow", "pandas", "numpy", "pydantic", "pyyaml")


def requirements(*kinds: str) -> list[str]:
    """Pinned pip requirements for the model kinds in one model (torch only with BERT), installed versions."""
    names = list(dict.fromkeys([*BASE_REQUIREMENTS, *registry.requirements(*kinds)]))
    out = []
    for name in names:
        try:
            # without a local label such as "+cpu", which only the PyTorch index knows
            out.append(f"{name}=={importlib.metadata.version(name).split('+')[0]}")
        except importlib.metadata.PackageNotFoundError:
            out.append(name)
    return out


def model_kinds(model_dir: Path) -> list[str]:
    """The kind of a saved model folder and, for an ensemble, of every member folder in it."""
    from pipeline.models.base import read_model_json

    card = read_model_json(model_dir)
    kinds = [card["kind"]]
    for folder in card.get("members", []) if card["kind"] == "ensemble" else []:
        kinds += model_kinds(Path(model_dir) / folder)
    return kinds


def _package_source(staging: Path) -> Path:
    """A clean copy of the `pipeline` package (no caches) to bundle as model code."""
    source = Path(__file__).resolve().parent
    target = staging / "pipeline"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so"))
    return target


# "Models from code": the logged model is this script plus the bundled package, not a pickled object.
MODEL_CODE = """\
import mlflow

from pipeline.pyfunc import SentenceLabellerPyfunc

mlflow.models.set_model(SentenceLabellerPyfunc())
"""


def log_pyfunc(model_dir: Path, name: str, segment_cfg: SegmentConfig) -> ModelInfo:
    """Log a saved model folder as the sentence-labeller pyfunc on the active run (MLflow 3 `name=`)."""
    model_dir = Path(model_dir)
    kinds = model_kinds(model_dir)
    kind = kinds[0]
    with tempfile.TemporaryDirectory(prefix="ct-pyfunc-") as tmp:
        staging = Path(tmp)
        segmenter = staging / "segmenter.json"
        segmenter.write_text(
            json.dumps(segment_cfg.model_dump(mode="json", include=set(SEGMENTER_RUNTIME_FIELDS)), indent=2),
            encoding="utf-8",
        )
        labels = staging / "label_schema.json"
        labels.write_text(
            json.dumps({"strategy": list(STRATEGY_LABELS), "commitment": list(COMMITMENT_LABELS)}, indent=2),
            encoding="utf-8",
        )
        entry = staging / "sentence_labeller_model.py"
        entry.write_text(MODEL_CODE, encoding="utf-8")
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(entry),
            artifacts={
                MODEL_ARTIFACT: str(model_dir),
                SEGMENTER_ARTIFACT: str(segmenter),
                LABELS_ARTIFACT: str(labels),
            },
            code_paths=[str(_package_source(staging))],
            signature=signature(),
            input_example=INPUT_EXAMPLE,
            pip_requirements=requirements(*kinds),
            metadata={"model_kind": kind},
            tags={"model_kind": kind},
        )
