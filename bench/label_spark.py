"""Labelling throughput: the local engine against Spark `local[1]` and `local[2]`, same input, same model.

    PIPELINE_SHARED_DIR=/path/to/shared python bench/label_spark.py [--sentences 3200] [--model FOLDER]

Input: the first documents of `corpus/extremism.jsonl` (PIPELINE_SHARED_DIR) up to `--sentences` sentences, a
day-sized batch; without the shared corpus, the constructed quick-start answers repeated. Model: the
quick-start ensemble (tiny BERT + TF-IDF) saved in tests/fixtures, unless `--model` names another folder.

For each engine: sentences/s of the labelling itself (for Spark: the labelling job, which includes starting
the Python workers and loading the model once in each) and, separately, Spark's start-up (the SparkSession).
Each Spark worker runs torch with cores / workers threads; the local engine with all cores. The ratio column
is against the local engine measured in the same run. Every engine's rows are checked to be the same.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from machine import machine_line  # bench/machine.py, beside this script

from pipeline.config import LabelConfig, SegmentConfig, SparkConfig
from pipeline.engines.spark import label_documents_spark, spark_session
from pipeline.io.documents import read_documents
from pipeline.label import label_documents
from pipeline.registry import resolve_model
from pipeline.schema import Document
from pipeline.segment import segment_document

REPO = Path(__file__).resolve().parents[1]
QUICKSTART_MODEL = REPO / "tests/fixtures/saved_models/quickstart-2026-12/model"


def day_input(target: Path, sentences: int) -> tuple[int, int]:
    """Write the first documents holding `sentences` sentences to `target`; (documents, sentences)."""
    shared = os.environ.get("PIPELINE_SHARED_DIR")
    corpus = Path(shared) / "corpus" / "extremism.jsonl" if shared else None
    if corpus and corpus.is_file():
        pool = [d for d in read_documents(corpus) if isinstance(d, Document)]
    else:
        answers = [d for d in read_documents(REPO / "data/sample/answers") if isinstance(d, Document)]
        pool = [d.model_copy(update={"id": f"{d.id}#{k}"}) for k in range(200) for d in answers]
    chosen, count = [], 0
    for document in pool:
        if count >= sentences:
            break
        chosen.append(document)
        count += len(segment_document(document, SegmentConfig()))
    target.write_text("".join(d.model_dump_json() + "\n" for d in chosen), encoding="utf-8")
    return len(chosen), count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=3200)
    parser.add_argument("--model", type=Path, default=QUICKSTART_MODEL)
    parser.add_argument("--masters", default="local[1],local[2]")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="bench-label-spark-"))
    documents, sentences = day_input(work / "day.jsonl", args.sentences)
    print(machine_line())
    print(f"input: {documents} documents, {sentences} sentences; model: {args.model}")

    base = LabelConfig(model=str(args.model), input=work / "day.jsonl", threads=cores)
    cfg = base.model_copy(update={"output": work / "local.parquet"})
    model, info = resolve_model(cfg.model)
    began = time.perf_counter()
    local = label_documents(cfg, model, info, read_documents(cfg.input), SegmentConfig(), show_progress=False)
    local_rate = local.sentences / (time.perf_counter() - began)
    reference = pq.read_table(local.output)
    rows = [("local engine", "-", f"{local_rate:.0f}", "1.00")]

    for master in args.masters.split(","):
        workers = int(master.removeprefix("local[").rstrip("]"))
        spark = SparkConfig(master=master, partitions=workers * 2, batch_documents=32)
        cfg = base.model_copy(
            update={"output": work / f"spark-{workers}.parquet", "spark": spark, "threads": max(1, cores // workers)}
        )
        began = time.perf_counter()
        session = spark_session(spark)
        startup = time.perf_counter() - began
        try:
            result = label_documents_spark(cfg, SegmentConfig(), session=session, log=lambda _: None)
        finally:
            session.stop()
        ours = pq.read_table(result.output)
        same = ours.column("doc_id").equals(reference.column("doc_id")) and np.allclose(
            ours.column("p_funding").to_numpy(), reference.column("p_funding").to_numpy(), atol=1e-6
        )
        if not same:
            raise SystemExit(f"{master}: the rows differ from the local engine's")
        rate = result.rows_per_second
        rows.append((f"Spark {master}", f"{startup:.1f}", f"{rate:.0f}", f"{rate / local_rate:.2f}"))

    print("\n| engine | Spark start-up (s) | sentences/s | ratio to local |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(json.dumps({"documents": documents, "sentences": sentences, "cores": cores}))


if __name__ == "__main__":
    main()
