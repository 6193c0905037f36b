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

Output: the labelled-sentence row of batch labelling (`pipeline.schema.LABELLED_ROW`: the document's title,
date, minister and question title, offsets, role, text, labels (`strategy` a list), both heads'
probabilities, `truncated`, `model_name`, `model_version`), from the same labelling
function (`pipeline.labelling`). For documents, `start`/`end` index the original document text
(`text[start:end]` is the passage; a row's `text` is that passage cleaned); a document with nothing to label
has no rows and is logged as a warning and listed in the output frame's `attrs["rejects"]`
(`SentenceLabellerPyfunc.label` returns rows and rejects).
For sentences, `start`/`end` span the sentence itself (0, len(text)), role `body`.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.types import ColSpec, Schema
from mlflow.types.schema import Array

import pipeline.training_config  # noqa: F401  (registers the built-in kinds, whose requirements are read here)
from pipeline import model_kinds as registry
from pipeline.config_sections import LabelConfig, SegmentConfig
from pipeline.io.digest import folder_digest
from pipeline.labelling import (
    SUMMARY_SCHEMA,
    LabelledBatch,
    ModelInfo,
    Predictor,
    label_batch,
    label_sentences,
    sentence_predictor,
)
from pipeline.schema import (
    COMMITMENT_LABELS,
    DOCUMENT_FACTS,
    LABELLED_ROW,
    LABELLED_ROW_COLUMNS,
    STRATEGY_LABELS,
    Document,
    Sentence,
)

if TYPE_CHECKING:
    from mlflow.models.model import ModelInfo as LoggedModelInfo

    from pipeline.models.base import SentenceModel

log = logging.getLogger(__name__)
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


def output_columns() -> list[str]:
    return list(LABELLED_ROW_COLUMNS)


_MLFLOW_TYPES = {str: "string", int: "long", float: "double", bool: "boolean"}


def signature() -> ModelSignature:
    """Documents or sentences in; the labelled-sentence row (`pipeline.schema.LABELLED_ROW`) out."""
    inputs = Schema(
        [
            ColSpec("string", "id", required=False),
            ColSpec("string", "doc_id", required=False),
            ColSpec("string", "text"),
        ]
    )
    facts = {name for name, _ in DOCUMENT_FACTS}  # None where the document does not say
    outputs = Schema(
        [
            ColSpec(Array("string") if kind is list else _MLFLOW_TYPES[kind], name, required=name not in facts)
            for name, kind in LABELLED_ROW
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

    After `load_context`, `sentence_model`, `segment_config` and `model_info` are available to in-process
    callers (`mlflow.pyfunc.load_model(uri).unwrap_python_model()`), and `label` returns the rejects too.
    """

    sentence_model: SentenceModel
    segment_config: SegmentConfig
    model_info: ModelInfo

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
        self.model_info = ModelInfo(
            name=str(schema.get("model_name", MODEL_ARTIFACT)),
            version=str(schema.get("model_version", "")),
            uri=str(context.artifacts[MODEL_ARTIFACT]),
        )

    def label(self, model_input: pd.DataFrame) -> LabelledBatch:
        """Rows and rejects: `predict` returns the rows; here the rejects come with them."""
        predict = sentence_predictor(self.sentence_model, LabelConfig())
        return label_frame(model_input, predict, self.model_info, self.segment_config)

    def predict(
        self,
        context: PythonModelContext | None,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """The labelled rows; a document with nothing to label is logged as a warning and listed, with its
        reason, in the frame's `attrs["rejects"]`."""
        try:
            frame = check_input(model_input)
        except ValueError as exc:
            raise BadModelInput(str(exc)) from exc
        batch = self.label(frame)
        out = batch.sentences.to_pandas()
        out["strategy"] = out["strategy"].map(list)  # plain lists of labels (Arrow gives numpy arrays)
        if batch.rejects:
            for reject in batch.rejects:
                log.warning("document %r: %s (%s)", reject["id"], reject["reason"], reject["severity"])
        out.attrs["rejects"] = batch.rejects
        return out


def label_frame(frame: pd.DataFrame, predict: Predictor, info: ModelInfo, segment_cfg: SegmentConfig) -> LabelledBatch:
    """Documents (`id`, `text`) or sentences (`doc_id`, `text`, or `text` alone) -> labelled rows and rejects.

    Documents take batch labelling's path (`pipeline.labelling.label_batch`); sentences are labelled as given,
    with neighbours in a `doc_id` as context (without `doc_id`, each sentence on its own).
    """
    frame = check_input(frame)
    if "id" in frame.columns:
        documents = [Document(id=str(i), text=t) for i, t in zip(frame["id"], frame["text"], strict=True)]
        return label_batch(documents, predict, info, segment_cfg, max_chars=LabelConfig().max_chars)
    sentences = input_sentences(frame)
    table = label_sentences(sentences, predict, info, context="doc_id" in frame.columns)
    return LabelledBatch(sentences=table, summary=SUMMARY_SCHEMA.empty_table(), documents=len(sentences))


def check_input(frame: pd.DataFrame) -> pd.DataFrame:
    """The input as a DataFrame of documents or sentences; a clear error naming the problem otherwise."""
    if not isinstance(frame, pd.DataFrame):
        frame = pd.DataFrame(frame)
    if "text" not in frame.columns:
        raise ValueError(f"input needs a 'text' column (got columns {list(frame.columns)})")
    if "id" in frame.columns and "doc_id" in frame.columns:
        raise ValueError("input has both 'id' (documents) and 'doc_id' (sentences); give one of them")
    bad = [i for i, t in enumerate(frame["text"]) if not isinstance(t, str)]
    if bad:
        raise ValueError(f"input column 'text' must hold strings; rows {bad[:10]} do not")
    return frame


def input_sentences(frame: pd.DataFrame) -> list[Sentence]:
    """Sentences given as rows: `doc_id` (optional) and `text`; each spans itself, role `body`."""
    doc_ids = [str(d) for d in frame["doc_id"]] if "doc_id" in frame.columns else [""] * len(frame)
    seen: dict[str, int] = {}
    out = []
    for doc_id, text in zip(doc_ids, frame["text"], strict=True):
        index = seen.get(doc_id, 0)
        seen[doc_id] = index + 1
        out.append(Sentence(doc_id=doc_id, index=index, start=0, end=len(text), text=text))
    return out


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


def log_pyfunc(model_dir: Path, name: str, segment_cfg: SegmentConfig) -> LoggedModelInfo:
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
            json.dumps(
                {
                    "strategy": list(STRATEGY_LABELS),
                    "commitment": list(COMMITMENT_LABELS),
                    "model_name": name,  # what the rows' model_name and model_version columns say
                    "model_version": folder_digest(model_dir),
                },
                indent=2,
            ),
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


class ModelLoadError(RuntimeError):
    """The model at a URI could not be loaded as a pyfunc; the message is MLflow's reason."""


def scoring_app(model_uri: str, model_info: ModelInfo | None = None) -> Any:
    """MLflow's scoring server app (`/invocations`, `/ping`, `/health`, `/version`) for the pyfunc at `model_uri`.

    With `model_info` (a registered model's name and version), the rows name it as batch labelling's do,
    not by the logged artifact the pyfunc knows itself by.
    """
    from mlflow.pyfunc import scoring_server

    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except MlflowException as exc:
        raise ModelLoadError(str(exc)) from exc
    python_model = model.unwrap_python_model()
    if model_info is not None and isinstance(python_model, SentenceLabellerPyfunc):
        python_model.model_info = model_info
    return scoring_server.init(model)
