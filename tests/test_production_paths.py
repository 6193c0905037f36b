"""The production paths run end to end, shrunk: `configs/kb-bert.yaml` and `scripts/gpu_pretrain.sh`.

Neither can run for real here (KB-BERT is on the Hugging Face hub, the GPU run wants a lent GPU and the shared
corpus), so each runs as a user would start it, in a temporary folder, with only what needs the hub or the
shared data swapped: the session's micro backbone stands in for KBLab/bert-base-swedish-cased, the bundled
constructed sample for the gold data and the corpus, and step/epoch counts are cut to seconds. Every text
used is constructed (data/sample/ and tests/micro_bert.py); nothing is read from PIPELINE_SHARED_DIR.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from micro_bert import constructed_labelled

from pipeline.labelled_data import read_labelled, write_labelled
from pipeline.sample import write_sample

pytestmark = pytest.mark.slow  # real pretraining and fine-tuning in fresh interpreters

ROOT = Path(__file__).resolve().parents[1]


def environment(**extra: str) -> dict[str, str]:
    """This interpreter's environment with the checkout first on the path and no store or shared data set."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}
    for name in ("MLFLOW_TRACKING_URI", "PIPELINE_SHARED_DIR"):
        if name not in extra:
            env.pop(name, None)
    return env


def split_by_document(path: Path, gold: Path, silver: Path) -> None:
    """The sample's train split as two training sources, as kb-bert.yaml has gold train + silver."""
    sentences = read_labelled(path)
    documents = sorted({s.doc_id for s in sentences})
    silver_docs = set(documents[: len(documents) // 3])
    write_labelled([s for s in sentences if s.doc_id not in silver_docs], gold)
    write_labelled([s for s in sentences if s.doc_id in silver_docs], silver)


def test_kb_bert_config_pretrains_fine_tunes_and_evaluates(tmp_path: Path, micro_backbone: Path) -> None:
    sample = write_sample(tmp_path / "sample")
    split_by_document(sample / "labelled" / "train.jsonl", tmp_path / "gold.jsonl", tmp_path / "silver.jsonl")
    overrides = [
        # what needs the hub or the shared data
        f"pretrain.init_from={micro_backbone}",
        f"pretrain.corpus=[{sample / 'corpus.jsonl'}]",
        f"data.train.0={tmp_path / 'gold.jsonl'}",
        f"data.train.1.path={tmp_path / 'silver.jsonl'}",
        f"data.dev={sample / 'labelled' / 'dev.jsonl'}",
        # seconds instead of hours
        "pretrain.max_steps=4",
        "pretrain.batch_size=8",
        "pretrain.threads=1",
        "train.model.epochs=1",
        "evaluate.bootstrap_samples=20",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "-c", str(ROOT / "configs" / "kb-bert.yaml")]
        + [arg for item in overrides for arg in ("--set", item)],
        cwd=tmp_path,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]

    runs = tmp_path / "runs" / "kb-bert"
    pretrained = json.loads((runs / "backbone" / "pretrain.json").read_text())
    assert pretrained["steps"] == 4 and pretrained["resumed_from_step"] == 0
    backbone_vocab = json.loads((micro_backbone / "config.json").read_text())["vocab_size"]
    continued = json.loads((runs / "backbone" / "config.json").read_text())
    assert continued["vocab_size"] == backbone_vocab and continued["hidden_size"] == 32  # continued, not scratch
    vocabulary = [
        json.loads((f / "tokenizer.json").read_text())["model"]["vocab"] for f in (runs / "backbone", micro_backbone)
    ]
    assert vocabulary[0] == vocabulary[1]

    card = json.loads((runs / "models" / "model" / "model.json").read_text())
    assert card["kind"] == "bert" and card["spec"]["backbone"] == "runs/kb-bert/backbone"
    assert card["spec"]["context"] is True
    assert (runs / "models" / "baseline-tfidf" / "model.json").is_file()
    for name in ("model", "baseline-tfidf"):
        report = json.loads((runs / "evaluation" / name / "report.json").read_text())
        assert report["metrics"], name
    assert "model" in (runs / "evaluation" / "comparison.md").read_text()

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/runs/mlflow.db")
    experiment = client.get_experiment_by_name("kb-bert")
    assert experiment is not None
    found = client.search_runs([experiment.experiment_id])
    stages = {run.data.tags.get("stage") for run in found if run.info.status == "FINISHED"}
    assert {"pretrain", "train", "evaluate"} <= stages
    parent = next(run for run in found if "stage" not in run.data.tags)
    assert parent.info.status == "FINISHED" and parent.data.params["pretrain.mode"] == "continue"
    assert client.get_model_version_by_alias("ct-sentence-labeller", "challenger") is not None


def constructed_corpus(path: Path, documents: int = 120) -> Path:
    """A gzipped JSONL corpus of constructed documents (template sentences), as corpus/regeringen.jsonl.gz."""
    rng = random.Random(5)
    sentences = [s.text for s in constructed_labelled(80, seed=11, prefix="gpu")]
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for i in range(documents):
            text = " ".join(rng.sample(sentences, rng.randint(4, 10)))
            handle.write(json.dumps({"id": f"constructed{i}", "text": text}, ensure_ascii=False) + "\n")
    return path


def test_gpu_pretrain_script_runs_on_cpu_and_leaves_its_results(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    constructed_corpus(shared / "corpus" / "regeringen.jsonl.gz")
    out = tmp_path / "out"
    tiny = [
        "pretrain.tokenizer.vocab_size=400",
        "pretrain.size.layers=1",
        "pretrain.size.hidden=32",
        "pretrain.size.heads=2",
        "pretrain.size.intermediate=64",
        "pretrain.size.max_positions=64",
        "pretrain.block_size=32",
        "pretrain.batch_size=8",
        "pretrain.max_steps=6",
        "pretrain.checkpoint_every=3",
        "pretrain.heldout_fraction=0.1",
        "pretrain.log_every=2",
        "pretrain.threads=1",
    ]
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_pretrain.sh")],
        cwd=tmp_path,
        env=environment(
            OUT=str(out),
            PIPELINE_SHARED_DIR=str(shared),
            PYTHON=sys.executable,
            GPU_PRETRAIN_SET=" ".join(tiny),
        ),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]

    summary = json.loads((out / "backbone" / "pretrain.json").read_text())
    assert summary["steps"] == 6 and summary["heldout_blocks"] > 0
    assert summary["output_dir"] == str(out / "backbone")
    assert result.stdout.endswith((out / "backbone" / "pretrain.json").read_text())  # the script ends with it
    config = json.loads((out / "backbone" / "config.json").read_text())
    assert config["num_hidden_layers"] == 1 and config["hidden_size"] == 32  # the overrides reached the run
    assert (out / "backbone" / "model.safetensors").is_file() and (out / "backbone" / "tokenizer.json").is_file()
    assert not (out / "backbone" / "checkpoints").exists()  # the script drops the optimizer state
    assert "steps" in (out / "pretrain.log").read_text()
    assert "cuda" in (out / "env.txt").read_text()
    assert (out / "mlflow.db").is_file() and any((out / "mlartifacts").rglob("pretrain.json"))
