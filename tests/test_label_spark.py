"""The Spark engine against the local engine: same rows, same summaries, same rejects; safe reruns.

Real Spark (`local[2]`, the machine's Java), one SparkSession for the module, a real TF-IDF model, the real
readers and segmenter; a Python worker, and a driver in its own process, are killed mid-job with SIGKILL.
Documents are constructed here.
Marked `spark`: left out of the quick tier, run by scripts/test.sh (and CI) with the other marked tiers.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import LabelConfig, SegmentConfig, SparkConfig
from pipeline.io.documents import read_documents
from pipeline.label import label_documents
from pipeline.label_output import LabelRunMismatch
from pipeline.labelling import SENTENCE_SCHEMA, SUMMARY_SCHEMA
from pipeline.models.tfidf import TfidfModel
from pipeline.registry import resolve_model
from tests.labelled_examples import constructed_sentences
from tests.test_hostile_inputs import cli
from tests.test_label import PARAGRAPHS, constructed_documents

pytestmark = pytest.mark.spark
pyspark = pytest.importorskip("pyspark")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip("no Java runtime for Spark", allow_module_level=True)

from pipeline.engines.spark import label_documents_spark, spark_session  # noqa: E402
from pipeline.engines.spark_tasks import KILL_FILE_ENV  # noqa: E402

SPARK = SparkConfig(master="local[2]", partitions=3, batch_documents=8)


@pytest.fixture(scope="module")
def kill_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fault") / "kill-one-worker"


@pytest.fixture(scope="module")
def session(kill_file: Path):
    os.environ[KILL_FILE_ENV] = str(kill_file)  # inherited by the Python workers the JVM starts
    spark = spark_session(SPARK)
    yield spark
    spark.stop()
    os.environ.pop(KILL_FILE_ENV, None)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tfidf") / "model"
    TfidfModel(min_df=1, tune_thresholds=False).fit(constructed_sentences()).save(folder)
    return folder


@pytest.fixture(scope="module")
def inbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of every input kind: JSONL with bad lines and a repeated id, Parquet, text files, junk."""
    folder = tmp_path_factory.mktemp("inbox")
    documents = constructed_documents(60)
    lines = [d.model_dump_json() for d in documents[:40]]
    lines[3] = "[1, 2]"
    lines[7] = json.dumps({"id": "svar-0001", "text": PARAGRAPHS[4]}, ensure_ascii=False)  # repeated id
    lines.insert(10, "")
    lines.append(json.dumps({"id": "tom", "text": "   "}))
    (folder / "a-answers.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    records = [{"id": d.id, "title": d.title, "date": d.date, "text": d.text, "n": i} for i, d in enumerate(documents)]
    records = records[40:]
    records[2]["text"] = None
    table = pa.Table.from_pylist(records)
    pq.write_table(table, folder / "b-answers.parquet")
    (folder / "c.txt").write_text(PARAGRAPHS[0] + "\n\n" + PARAGRAPHS[2], encoding="utf-8")
    (folder / "d-long.txt").write_text(" ".join(PARAGRAPHS * 20), encoding="utf-8")
    (folder / "e-latin1.txt").write_bytes("Förslaget bereds.".encode("latin-1"))
    (folder / "f.png").write_bytes(b"\x89PNG\r\n")
    return folder


def config(tmp_path: Path, inbox: Path, model_dir: Path, **changes: object) -> LabelConfig:
    values: dict[str, object] = {
        "model": str(model_dir),
        "input": inbox,
        "output": tmp_path / "labelled.parquet",
        "max_chars": 400,
        "chunk_documents": 16,
        "spark": SPARK,
    }
    return LabelConfig(**{**values, **changes})


def rejects_of(path: Path) -> list[tuple]:
    return sorted(tuple(sorted(json.loads(line).items())) for line in path.read_text(encoding="utf-8").splitlines())


def assert_same_tables(spark_path: Path, local_path: Path, schema: pa.Schema) -> None:
    """Row for row: the same columns and types, equal values, probabilities within 1e-6."""
    ours, theirs = pq.read_table(spark_path), pq.read_table(local_path)
    assert ours.schema.equals(schema, check_metadata=False) and theirs.schema.equals(schema, check_metadata=False)
    assert ours.num_rows == theirs.num_rows > 0
    for field in schema:
        a, b = ours.column(field.name).to_pylist(), theirs.column(field.name).to_pylist()
        if field.type == pa.float64():
            np.testing.assert_allclose(a, b, atol=1e-6, rtol=0, err_msg=field.name)
        else:
            assert a == b, field.name


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory, inbox: Path, model_dir: Path):
    out = tmp_path_factory.mktemp("local")
    cfg = config(out, inbox, model_dir)
    model, info = resolve_model(cfg.model)
    return label_documents(cfg, model, info, read_documents(inbox), SegmentConfig(), show_progress=False)


def test_spark_output_equals_the_local_engines(session, local_run, inbox, model_dir, tmp_path) -> None:
    cfg = config(tmp_path, inbox, model_dir)
    result = label_documents_spark(cfg, SegmentConfig(), session=session, log=lambda _: None)

    assert result.output.is_dir()  # a Parquet dataset: part files in input order
    assert_same_tables(result.output, local_run.output, SENTENCE_SCHEMA)
    assert_same_tables(result.summary, local_run.summary, SUMMARY_SCHEMA)
    assert rejects_of(result.rejects) == rejects_of(local_run.rejects)
    reasons = " | ".join(r["reason"] for r in map(json.loads, result.rejects.read_text().splitlines()))
    for expected in ("duplicate id", "expected a JSON object", "is null", "unsupported file type", "max_chars=400"):
        assert expected in reasons
    counts = ("documents", "labelled", "sentences", "rejected", "warnings")
    assert [getattr(result, c) for c in counts] == [getattr(local_run, c) for c in counts]
    assert result.exit_code == local_run.exit_code
    assert not Path(f"{cfg.output}.partial").exists()


def test_rerun_into_an_output_and_other_arguments_refused(session, local_run, inbox, model_dir, tmp_path) -> None:
    cfg = config(tmp_path, inbox, model_dir)
    label_documents_spark(cfg, SegmentConfig(), session=session, log=lambda _: None)
    label_documents_spark(cfg, SegmentConfig(), session=session, log=lambda _: None)  # replaces, no duplicates
    assert_same_tables(cfg.output, local_run.output, SENTENCE_SCHEMA)

    partial = Path(f"{cfg.output}.partial")
    partial.mkdir()
    (partial / "manifest.json").write_text(json.dumps({"engine": "spark", "label": {"max_chars": 1}}))
    with pytest.raises(LabelRunMismatch, match="other arguments"):
        label_documents_spark(cfg, SegmentConfig(), session=session, log=lambda _: None)


def test_a_killed_worker_then_a_rerun_give_the_same_output(
    session, local_run, inbox, model_dir, kill_file, tmp_path
) -> None:
    cfg = config(tmp_path, inbox, model_dir)
    kill_file.write_text("kill")
    try:  # local[2] does not retry a failed task: the job fails, as a cluster's does after its retries
        label_documents_spark(cfg, SegmentConfig(), session=session, log=lambda _: None)
    except Exception as exc:
        assert "crashed" in str(exc) or "exited" in str(exc) or "Python worker" in str(exc), exc
    assert not kill_file.exists()  # a worker did die mid-job
    assert Path(f"{cfg.output}.partial").is_dir() or cfg.output.is_dir()

    result = label_documents_spark(cfg, SegmentConfig(), session=session, log=lambda _: None)
    assert_same_tables(result.output, local_run.output, SENTENCE_SCHEMA)
    assert_same_tables(result.summary, local_run.summary, SUMMARY_SCHEMA)
    assert rejects_of(result.rejects) == rejects_of(local_run.rejects)
    assert len(list(result.output.glob("*.parquet"))) >= 1 and not Path(f"{cfg.output}.partial").exists()


def test_a_finished_output_and_other_arguments_refused_in_one_line_unless_overwrite(
    session, local_run, inbox, model_dir, tmp_path
) -> None:
    cfg = config(tmp_path, inbox, model_dir)
    label_documents_spark(cfg, SegmentConfig(), session=session, log=lambda _: None)
    record = Path(f"{cfg.output}.run.json")
    assert record.is_file()  # the settings the output was written with
    before = sorted((p.name, p.read_bytes()) for p in cfg.output.glob("*.parquet"))

    # through the CLI, as the local engine: one line naming the setting, exit 2, before Spark starts
    (tmp_path / "config.yaml").write_text(
        f"label:\n  model: {model_dir}\n  input: {inbox}\n  output: {cfg.output}\n  chunk_documents: 16\n"
        f"  spark: {{master: 'local[2]', partitions: 3, batch_documents: 8}}\n"
        f"tracking:\n  uri: sqlite:///{tmp_path / 'mlflow.db'}\n  artifact_location: {tmp_path / 'artifacts'}\n",
        encoding="utf-8",
    )
    refused = cli(tmp_path, "label", "-c", "config.yaml", "--engine", "spark", "-s", "label.max_chars=500")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-3000:]
    [line] = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert "already written by a run with other arguments (differs in label.max_chars)" in line
    assert "--overwrite" in line and "Spark" not in refused.stdout  # refused before a session started
    assert sorted((p.name, p.read_bytes()) for p in cfg.output.glob("*.parquet")) == before  # untouched

    other = cfg.model_copy(update={"max_chars": 500})
    with pytest.raises(LabelRunMismatch, match=r"differs in label\.max_chars\)"):
        label_documents_spark(other, SegmentConfig(), session=session, log=lambda _: None)
    replaced = label_documents_spark(
        other.model_copy(update={"overwrite": True}), SegmentConfig(), session=session, log=lambda _: None
    )
    assert replaced.sentences > local_run.sentences  # max_chars 500 instead of 400: more of a long one read
    label_documents_spark(other, SegmentConfig(), session=session, log=lambda _: None)  # now it matches


_DRIVER = """
import sys
from pathlib import Path
from pipeline.config import LabelConfig, SegmentConfig, SparkConfig
from pipeline.engines.spark import label_documents_spark
model, inbox, output = sys.argv[1:4]
spark = SparkConfig(master="local[2]", partitions=3, batch_documents=2, conf={"spark.ui.enabled": "false"})
cfg = LabelConfig(model=model, input=Path(inbox), output=Path(output), max_chars=400, chunk_documents=16, spark=spark)
label_documents_spark(cfg, SegmentConfig())
"""


def test_a_killed_driver_then_a_rerun_give_the_same_output(session, local_run, inbox, model_dir, tmp_path) -> None:
    """The process running the job is killed (SIGKILL) once Spark has committed some of its tasks."""
    cfg = config(tmp_path, inbox, model_dir)
    staged = Path(f"{cfg.output}.partial") / "labelled"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop(KILL_FILE_ENV, None)
    log_path = tmp_path / "driver.log"
    with log_path.open("w") as log:
        driver = subprocess.Popen(
            [sys.executable, "-c", _DRIVER, str(model_dir), str(inbox), str(cfg.output)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not list(staged.glob("_temporary/*/task_*")):  # a task of the labelling job has committed
            assert driver.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "the labelling job did not start"
            time.sleep(0.02)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
        assert not (staged / "_SUCCESS").exists() and not cfg.output.exists()  # killed mid-job
    finally:
        with contextlib.suppress(ProcessLookupError):  # its JVM and Python workers go with it
            os.killpg(driver.pid, signal.SIGKILL)

    result = label_documents_spark(cfg, SegmentConfig(), session=session, log=lambda _: None)
    assert_same_tables(result.output, local_run.output, SENTENCE_SCHEMA)
    assert_same_tables(result.summary, local_run.summary, SUMMARY_SCHEMA)
    assert rejects_of(result.rejects) == rejects_of(local_run.rejects)
    rows = pq.read_table(result.output).select(["doc_id", "index"]).to_pylist()
    assert len(rows) == len({(r["doc_id"], r["index"]) for r in rows})  # no duplicated rows
    assert not Path(f"{cfg.output}.partial").exists()


def test_output_paths_with_glob_characters_work(session, local_run, inbox, model_dir, tmp_path) -> None:
    """Hadoop reads `[1]`, `*`, `?` and `{a,b}` in a path as a pattern; the engine's paths are literal."""
    folder = tmp_path / "run[1]*?{a,b}"
    cfg = config(folder, inbox, model_dir, output=folder / "labelled[2024]?.parquet")
    result = label_documents_spark(cfg, SegmentConfig(), session=session, log=lambda _: None)
    assert result.output == folder / "labelled[2024]?.parquet" and result.output.is_dir()
    assert_same_tables(result.output, local_run.output, SENTENCE_SCHEMA)
    assert_same_tables(result.summary, local_run.summary, SUMMARY_SCHEMA)
    assert rejects_of(result.rejects) == rejects_of(local_run.rejects)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["labelled[2024]?.parquet", "labelled[2024]?.summary.parquet", "labelled[2024]?.rejects.jsonl",
         "labelled[2024]?.parquet.run.json"]
    )  # fmt: skip
