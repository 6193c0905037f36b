"""Labelling throughput and memory: the label stage against a transformers `pipeline("text-classification")`.

    python bench/label_throughput.py [--models small,base,ensemble] [--sizes 800,3200] [--threads 2]

One run, same weights, same sentences, same thread count; the CPU's SIMD flags are printed. Three models,
each trained and prepared as the train stage prepares it (`prepare_inference`: ONNX export, fusion, int8,
per-head agreement with float32 on dev sentences, `inference.json`; timed apart):

- `small`: the small BERT alone (4 x 256): with PIPELINE_SHARED_DIR, the shared `sv-bert-mini-cpu-v2` backbone
  fine-tuned one epoch on the first `--fit-sentences` gold train sentences; otherwise random weights;
- `base`: BERT-base shape (12 x 768), random weights (a speed test; its labels mean nothing);
- `ensemble`: a two-member model like the shipped one, built small: the small BERT (fine-tuned as above) and
  TF-IDF + logistic regression, fixed weights 0.3 / 0.7;
- `ensemble-document`: the same with the TF-IDF member reading each sentence's document too
  (`document_weight` 0.5, `gated_document_weight` 1.0, as configs/gold.yaml ships it).

For each model and input size, every variant runs in a fresh Python process (so each peak RSS is its own):

- `hf-pipeline`: transformers `pipeline("text-classification")`, batch 32, truncation to 128 tokens, over the
  stage's sentences in document order, on a `BertForSequenceClassification` with the same encoder weights
  (for the ensemble: its BERT member; the pipeline has no TF-IDF);
- `label float32`: the whole stage (`label.quantize: none`: PyTorch float32);
- `label default`: the whole stage with default settings (the stored path that passed its agreement check).

Sentences/s is the stage's (or the pipeline loop's) own wall time, model loading excluded. Peak RSS is the
process's maximum resident set (imports and model included). "changed" is the share of sentences whose label
differs between `label default` and `label float32`, per head. The `label` rows also say where the time went
(`LabelResult.timings`). Inputs: with PIPELINE_SHARED_DIR, gold sentences joined into their documents, one
sentence a line (dev documents, then train documents for larger sizes); otherwise constructed sentences.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline.config import BertSpec, LabelConfig, SegmentConfig, TokenizerConfig
from pipeline.schema import Document, LabelledSentence

SHAPES = {
    "small": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024},
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
}
MAX_LENGTH = 128
HF_BATCH = 32
ENSEMBLE_WEIGHTS = (0.3, 0.7)
ENSEMBLE_DOCUMENT = "ensemble-document"

# Constructed sentences (written for this benchmark) for runs without the shared data.
_SUBJECTS = ["Regeringen", "Säkerhetspolisen", "Myndigheten", "Kommunen", "Polisen", "Centret", "Utredaren"]
_VERBS = ["avsätter medel till", "ska föreslå ändringar i", "ger stöd till", "har fått i uppdrag att samordna"]
_OBJECTS = [
    "det förebyggande arbetet mot våldsbejakande extremism",
    "skyddet av offentliga platser och kritisk infrastruktur",
    "lagstiftningen om terroristbrott",
    "anhöriga till personer som riskerar att radikaliseras",
    "kontrollen av sprängämnesprekursorer",
]
_KINDS = ["funding", "pending_proposal", "support", "institution", "none"]


def constructed_sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        tail = " och ".join(rng.sample(_OBJECTS, rng.randint(0, 3)))
        words = [rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS)]
        out.append(" ".join(words) + (f" samt {tail}" if tail else "") + ".")
    return out


def constructed_documents(n_sentences: int, seed: int = 0) -> list[Document]:
    sentences = constructed_sentences(n_sentences, seed)
    return [
        Document(id=f"bench-{i}", text="Stockholm den 1 juni 2021\n" + "\n".join(sentences[i : i + 12]))
        for i in range(0, len(sentences), 12)
    ]


def gold_documents(shared: Path, n_sentences: int) -> list[Document]:
    """Gold dev, then train, sentences: whole documents in file order until `n_sentences`, one a line."""
    by_doc: dict[str, list[str]] = {}
    for name in ("dev.jsonl", "train.jsonl"):
        with open(shared / "gold" / name, encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                by_doc.setdefault(row["doc_id"], []).append(row["text"])
    documents, total = [], 0
    for doc_id, texts in by_doc.items():
        if total >= n_sentences:
            break
        documents.append(Document(id=doc_id, text="\n".join(texts)))
        total += len(texts)
    return documents


def training_sentences(shared: Path | None, n: int) -> list[LabelledSentence]:
    if shared:
        with open(shared / "gold" / "train.jsonl", encoding="utf-8") as handle:
            return [LabelledSentence.model_validate_json(line) for line in handle][:n]
    texts = constructed_sentences(min(n, 120), seed=2)
    return [
        LabelledSentence(id=f"b{i}", doc_id=f"b{i // 6}", text=t, strategy=[], commitment=_KINDS[i % 5])
        for i, t in enumerate(texts)
    ]


# --- models ---------------------------------------------------------------------------------------------


def build_backbone(shape: str, root: Path, shared: Path | None) -> Path:
    """A BertForMaskedLM folder of the given shape: the shared small backbone, or random weights."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    shared_small = shared / "models" / "sv-bert-mini-cpu-v2" if shared else None
    if shape == "small" and shared_small and shared_small.is_dir():
        return shared_small
    folder = root / f"backbone-{shape}"
    if shared_small and shared_small.is_dir():
        tokenizer = AutoTokenizer.from_pretrained(str(shared_small))
        tokenizer.save_pretrained(str(folder))
    else:
        from pipeline.models.mlm_corpus import train_tokenizer

        corpus = root / "corpus.txt"
        corpus.write_text("\n".join(constructed_sentences(3000, seed=1)), encoding="utf-8")
        tokenizer = train_tokenizer([corpus], TokenizerConfig(vocab_size=2000, min_frequency=1), folder)
    config = BertConfig(
        vocab_size=len(tokenizer), max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id, **SHAPES[shape]
    )
    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(str(folder))
    return folder


def build_model(name: str, root: Path, shared: Path | None, fit_sentences: int) -> Path:
    """Train a model (`small`, `base`, `ensemble` or `ensemble-document`), save it and prepare its fast path as
    training does."""
    from pipeline.models.backbone import quiet_transformers
    from pipeline.models.bert import BertTwoHeadModel
    from pipeline.models.ensemble import EnsembleModel
    from pipeline.models.tfidf import TfidfModel

    shape = "base" if name == "base" else "small"
    spec = BertSpec(
        backbone=str(build_backbone(shape, root, shared)), max_length=MAX_LENGTH, epochs=1, batch_size=32,
        learning_rate=1e-4,
    )  # fmt: skip
    train = training_sentences(shared, fit_sentences if shape == "small" else 16)
    with quiet_transformers():
        if name.startswith("ensemble"):
            reads_document = {"document_weight": 0.5, "gated_document_weight": 1.0} if name == ENSEMBLE_DOCUMENT else {}
            members = [BertTwoHeadModel(spec), TfidfModel(min_df=1, **reads_document)]
            model = EnsembleModel(members, weights=list(ENSEMBLE_WEIGHTS), combiner="weights").fit(train)
        else:
            model = BertTwoHeadModel(spec).fit(train)
    folder = root / f"model-{name}"
    model.save(folder)
    dev_docs = gold_documents(shared, 816) if shared and shape == "small" else constructed_documents(400, seed=5)
    dev = [
        LabelledSentence(id=f"{d.id}-{i}", doc_id=d.id, text=t, strategy=[], commitment="none")
        for d in dev_docs
        for i, t in enumerate(d.text.split("\n"))
        if t.strip()
    ]
    started = time.perf_counter()
    cards = model.prepare_inference(folder, dev)
    seconds = time.perf_counter() - started
    for card in cards:
        paths = {k: {"passed": v.get("passed"), **{x: v.get(x) for x in ("commitment_changed", "strategy_changed")}}
                 for k, v in card["paths"].items()}  # fmt: skip
        print(f"  {name}: prepared in {seconds:.0f} s; default {card['default']}; stored check on dev: {paths}")
    return folder


def bert_member(folder: Path) -> Path:
    """The folder of the model's BERT (the model itself, or the ensemble's BERT member)."""
    card = json.loads((folder / "model.json").read_text())
    if card["kind"] == "ensemble":
        return next(folder / sub for sub in card["members"] if (folder / sub / "config.json").is_file())
    return folder


# --- the measured processes -----------------------------------------------------------------------------


def peak_mb() -> float:
    """This process's peak resident set (VmHWM: unlike ru_maxrss, not inherited from the parent across exec)."""
    with open("/proc/self/status", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_hf(job: dict) -> dict:
    """transformers' text-classification pipeline on the same encoder weights (own pooler + classifier)."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification, pipeline

    from pipeline.models.backbone import quiet_transformers
    from pipeline.models.bert import BertTwoHeadModel

    torch.set_num_threads(job["threads"])
    texts = json.loads(Path(job["texts"]).read_text(encoding="utf-8"))
    encoder = Path(job["encoder"])
    if not encoder.is_dir():
        model = BertTwoHeadModel.load(Path(job["model"]))
        with quiet_transformers():
            model.network_.encoder.save_pretrained(str(encoder))
            model.tokenizer.save_pretrained(str(encoder))
        del model
    with quiet_transformers():
        network = BertForSequenceClassification.from_pretrained(str(encoder), num_labels=5).eval()
        tokenizer = AutoTokenizer.from_pretrained(str(encoder))
    classify = pipeline("text-classification", model=network, tokenizer=tokenizer, device=-1)
    started = time.perf_counter()
    out = list(classify(texts, batch_size=HF_BATCH, truncation=True, max_length=MAX_LENGTH))
    seconds = time.perf_counter() - started
    return {"sentences": len(out), "seconds": seconds, "peak_mb": peak_mb()}


def worker_label(job: dict) -> dict:
    from pipeline.io.documents import read_documents
    from pipeline.label import label_documents, model_from_folder

    model, info = model_from_folder(job["model"])
    cfg = LabelConfig(output=Path(job["output"]), threads=job["threads"], quantize=job["quantize"], overwrite=True)
    started = time.perf_counter()
    result = label_documents(cfg, model, info, read_documents(Path(job["input"])), SegmentConfig(), show_progress=False)
    seconds = time.perf_counter() - started
    return {
        "sentences": result.sentences,
        "seconds": seconds,
        "peak_mb": peak_mb(),
        "precision": result.precision,
        "timings": result.timings,
    }


def run_worker(job: dict) -> dict:
    """One variant in a fresh interpreter (nice 10: the machine is shared); its JSON result from stdout."""
    done = subprocess.run(
        ["nice", "-n", "10", sys.executable, __file__, "--worker", json.dumps(job)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"worker {job['variant']} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def changed(default: Path, reference: Path) -> dict[str, float]:
    """Per head, the share of sentences whose label differs from float32's."""
    import pandas as pd

    a, b = pd.read_parquet(default), pd.read_parquet(reference)
    strategy = [sorted(x) if not isinstance(x, str) else x for x in a.strategy]
    strategy_ref = [sorted(x) if not isinstance(x, str) else x for x in b.strategy]
    return {
        "commitment": float((a.commitment.to_numpy() != b.commitment.to_numpy()).mean()),
        "strategy": float(sum(x != y for x, y in zip(strategy, strategy_ref, strict=True)) / len(a)),
    }


def bench_model(name: str, folder: Path, root: Path, shared: Path | None, size: int, threads: int) -> dict:
    from pipeline.io.jsonl import write_jsonl

    documents = gold_documents(shared, size) if shared else constructed_documents(size)
    inputs = root / f"input-{size}.jsonl"
    write_jsonl(inputs, [d.model_dump(mode="json") for d in documents])
    common = {"model": str(folder), "input": str(inputs), "threads": threads}
    fp32 = run_worker({**common, "variant": "label", "quantize": "none", "output": str(root / f"{name}-fp32.parquet")})
    import pandas as pd

    texts = root / f"texts-{name}-{size}.json"
    texts.write_text(json.dumps(list(pd.read_parquet(root / f"{name}-fp32.parquet").text)), encoding="utf-8")
    member = bert_member(folder)
    hf = run_worker(
        {"variant": "hf", "model": str(member), "encoder": str(root / f"encoder-{name}"), "texts": str(texts),
         "threads": threads}
    )  # fmt: skip
    auto = run_worker({**common, "variant": "label", "quantize": "auto", "output": str(root / f"{name}-auto.parquet")})
    rate = {k: v["sentences"] / v["seconds"] for k, v in (("hf", hf), ("fp32", fp32), ("auto", auto))}
    return {
        "model": name,
        "sentences": fp32["sentences"],
        "hf": hf,
        "fp32": fp32,
        "auto": auto,
        "per_s": {k: round(v, 1) for k, v in rate.items()},
        "ratio": {k: round(v / rate["hf"], 2) for k, v in rate.items()},
        "changed": changed(root / f"{name}-auto.parquet", root / f"{name}-fp32.parquet"),
        "load_average": round(os.getloadavg()[0], 2),
    }


def print_result(r: dict) -> None:
    print(f"\n== {r['model']}, {r['sentences']} sentences (load average {r['load_average']})")
    print(f"{'variant':<16}{'sentences/s':>12}{'x hf':>7}{'peak RSS MB':>13}  where the time went (s)")
    for key, label in (("hf", "hf-pipeline"), ("fp32", "label float32"), ("auto", "label default")):
        v = r[key]
        times = ", ".join(f"{k} {s:.2f}" for k, s in v.get("timings", {}).items())
        name = f"{label} ({v['precision']})" if key == "auto" else label
        print(f"{name:<16}{r['per_s'][key]:>12.1f}{r['ratio'][key]:>7.2f}{v['peak_mb']:>13.0f}  {times}")
    print(
        f"labels changed vs float32: commitment {r['changed']['commitment']:.2%}, "
        f"strategy {r['changed']['strategy']:.2%}"
    )
    print(json.dumps(r))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="small,base,ensemble")
    parser.add_argument("--sizes", default="800,3200", help="comma-separated input sizes (sentences)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fit-sentences", type=int, default=1000, help="gold train sentences for the small BERT")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        job = json.loads(args.worker)
        print(json.dumps(worker_hf(job) if job["variant"] == "hf" else worker_label(job)))
        return
    from machine import machine_line  # bench/machine.py, beside this script

    shared = Path(os.environ["PIPELINE_SHARED_DIR"]) if os.environ.get("PIPELINE_SHARED_DIR") else None
    print(f"{os.cpu_count()} CPUs, {args.threads} threads per variant, load average {os.getloadavg()[0]:.2f}, "
          f"shared data: {shared}")  # fmt: skip
    print(machine_line())
    with tempfile.TemporaryDirectory(prefix="label-bench-") as tmp:
        root = Path(tmp)
        for name in args.models.split(","):
            folder = build_model(name, root, shared, args.fit_sentences)
            for size in [int(n) for n in args.sizes.split(",")]:
                print_result(bench_model(name, folder, root, shared, size, args.threads))


if __name__ == "__main__":
    main()
