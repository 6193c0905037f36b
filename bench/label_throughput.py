"""Labelling throughput: the label stage against a transformers `pipeline("text-classification")` loop.

    python bench/label_throughput.py [--shapes small,base] [--threads 2] [--repeats 2]
                                     [--small-sentences 800,3200] [--base-sentences 600]

Same model weights, same sentences, same thread count, in one process; the CPU's SIMD flags are printed. Each
model is first prepared as the train stage prepares it (`prepare_fast_inference`: ONNX export, fusion, int8,
per-head agreement with float32 on dev sentences, `inference.json`), timed apart. For each model shape:

- `hf-pipeline`: transformers `pipeline("text-classification")`, batch 32, truncation to 128 tokens, over the
  sentences in document order (a `BertForSequenceClassification` on the same encoder weights);
- `predict fp32` / `predict onnx-fp32` / `predict onnx-int8`: inference only, the model's own length-sorted
  token-budget batching, in PyTorch float32 and with each ONNX Runtime graph (whether or not its check passed);
- `label none` / `label auto`: the whole stage (segmentation, duplicate caching, inference, chunk commits,
  final parquet) in PyTorch float32 and with the default settings (the stored path that passed its check).

Sentences/s is best of `--repeats` (the machine may be shared); peak RSS is sampled during each variant. With
PIPELINE_SHARED_DIR set, the sentences are gold sentences joined into their documents, one sentence a line:
the dev documents, then (past the 816 dev sentences) train documents, as a day's larger batch; the small shape
is the shared `sv-bert-mini-cpu-v2` backbone fine-tuned for one epoch on the first `--fit-sentences` gold
train sentences and checked on the first 816 dev sentences; otherwise constructed sentences, random weights
and a tokenizer trained here. The base shape (12 x 768, BERT-base) always has random weights: a speed test.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import resource
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import psutil
import torch

from pipeline.config import BertSpec, LabelConfig, SegmentConfig, TokenizerConfig
from pipeline.label import label_documents, model_from_folder
from pipeline.models.agreement import cpu_flags, head_agreement, prepare_fast_inference
from pipeline.models.backbone import quiet_transformers
from pipeline.models.bert import BertTwoHeadModel
from pipeline.models.onnx_runtime import OnnxTwoHeadNetwork, export_float_graph, quantize_int8
from pipeline.schema import Document, LabelledSentence, SentenceText

SHAPES = {
    "small": {
        "hidden_size": 256,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "intermediate_size": 1024,
    },
    "base": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
    },
}
MAX_LENGTH = 128
HF_BATCH = 32

# Constructed sentences (written for this benchmark) for runs without the shared data.
_SUBJECTS = ["Regeringen", "Säkerhetspolisen", "Myndigheten", "Kommunen", "Polisen", "Centret", "Utredaren"]
_VERBS = [
    "avsätter medel till",
    "ska föreslå ändringar i",
    "ger stöd till",
    "har fått i uppdrag att samordna",
]
_OBJECTS = [
    "det förebyggande arbetet mot våldsbejakande extremism",
    "skyddet av offentliga platser och kritisk infrastruktur",
    "lagstiftningen om terroristbrott",
    "anhöriga till personer som riskerar att radikaliseras",
    "kontrollen av sprängämnesprekursorer",
]


def constructed_documents(n_sentences: int, seed: int = 0) -> list[Document]:
    rng = random.Random(seed)
    sentences = []
    for _ in range(n_sentences):
        words = [rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS)]
        tail = " och ".join(rng.sample(_OBJECTS, rng.randint(0, 3)))
        sentences.append(" ".join(words) + (f" samt {tail}" if tail else "") + ".")
    per_doc = 12
    return [
        Document(id=f"bench-{i}", text="Stockholm den 1 juni 2021\n" + "\n".join(sentences[i : i + per_doc]))
        for i in range(0, len(sentences), per_doc)
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


def gold_train(shared: Path) -> list[LabelledSentence]:
    with open(shared / "gold" / "train.jsonl", encoding="utf-8") as handle:
        return [LabelledSentence.model_validate_json(line) for line in handle]


# --- models ---------------------------------------------------------------------------------------------


def build_backbone(shape: str, root: Path, shared: Path | None) -> Path:
    """A BertForMaskedLM folder of the given shape: the shared small backbone, or random weights."""
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    shared_small = shared / "models" / "sv-bert-mini-cpu-v2" if shared else None
    folder = root / f"backbone-{shape}"
    if shape == "small" and shared_small and shared_small.is_dir():
        return shared_small
    if shared_small and shared_small.is_dir():
        tokenizer = AutoTokenizer.from_pretrained(str(shared_small))
        tokenizer.save_pretrained(str(folder))
    else:
        from pipeline.models.mlm_corpus import train_tokenizer

        corpus = root / "corpus.txt"
        corpus.write_text("\n".join(d.text for d in constructed_documents(3000, seed=1)), encoding="utf-8")
        tokenizer = train_tokenizer([corpus], TokenizerConfig(vocab_size=2000, min_frequency=1), folder)
    config = BertConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        **SHAPES[shape],
    )
    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(str(folder))
    return folder


def build_model(shape: str, root: Path, shared: Path | None, fit_sentences: int) -> Path:
    """A saved BertTwoHeadModel: fine-tuned one epoch on gold train (small + shared) or on a handful."""
    backbone = build_backbone(shape, root, shared)
    if shape == "small" and shared:
        train = gold_train(shared)[:fit_sentences]
    else:
        texts = [d.text.split("\n")[1] for d in constructed_documents(96, seed=2)]
        kinds = ["funding", "pending_proposal", "support", "institution", "none"]
        train = [
            LabelledSentence(id=f"b{i}", doc_id=f"b{i // 6}", text=t, strategy=[], commitment=kinds[i % 5])
            for i, t in enumerate(texts[:16])
        ]
    spec = BertSpec(backbone=str(backbone), max_length=MAX_LENGTH, epochs=1, batch_size=32, learning_rate=1e-4)
    with quiet_transformers():
        model = BertTwoHeadModel(spec).fit(train)
    model.save(root / f"model-{shape}")
    return root / f"model-{shape}"


def hf_classifier(model: BertTwoHeadModel, encoder: Path) -> Callable[[list[str]], list]:
    """transformers' text-classification pipeline on the same encoder weights (own pooler + classifier)."""
    from transformers import AutoTokenizer, BertForSequenceClassification, pipeline

    with quiet_transformers():
        model.network_.encoder.save_pretrained(str(encoder))  # the encoder alone, as a plain BERT folder
        model.tokenizer.save_pretrained(str(encoder))
        network = BertForSequenceClassification.from_pretrained(str(encoder), num_labels=5).eval()
        tokenizer = AutoTokenizer.from_pretrained(str(encoder))
    classify = pipeline("text-classification", model=network, tokenizer=tokenizer, device=-1)

    def run(texts: list[str]) -> list:
        return list(classify(texts, batch_size=HF_BATCH, truncation=True, max_length=MAX_LENGTH))

    return run


# --- measuring ------------------------------------------------------------------------------------------


@contextmanager
def peak_rss() -> Iterator[list[int]]:
    """Samples this process's RSS every 10 ms while the block runs; yields a one-item list with the peak."""
    process, peak, stop = psutil.Process(), [psutil.Process().memory_info().rss], threading.Event()

    def sample() -> None:
        while not stop.wait(0.01):
            peak[0] = max(peak[0], process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        stop.set()
        sampler.join()
        peak[0] = max(peak[0], process.memory_info().rss)


@dataclass
class Variant:
    name: str
    run: Callable[[], int]  # returns how many sentences it labelled
    setup: Callable[[], None] | None = None  # run before each measurement, not timed
    seconds: list[float] = field(default_factory=list)
    peak_mb: float = 0.0
    sentences: int = 0

    def measure(self) -> None:
        if self.setup is not None:
            self.setup()
        with peak_rss() as peak:
            started = time.perf_counter()
            self.sentences = self.run()
            self.seconds.append(time.perf_counter() - started)
        self.peak_mb = max(self.peak_mb, peak[0] / 2**20)

    @property
    def rate(self) -> float:
        return self.sentences / min(self.seconds)


def onnx_graphs(model: BertTwoHeadModel, folder: Path) -> dict[str, Path]:
    """Both ONNX graphs of the model (the model folder keeps only the one its check chose)."""
    fp32 = export_float_graph(model.network_, folder)
    return {"onnx-fp32": fp32, "onnx-int8": quantize_int8(fp32)}


def bench_shape(
    shape: str,
    root: Path,
    shared: Path | None,
    sizes: list[int],
    threads: int,
    repeats: int,
    fit_sentences: int,
) -> list[dict]:
    """One model of `shape`, prepared as training prepares it, measured on each input size."""
    model_dir = build_model(shape, root, shared, fit_sentences)
    model, _ = model_from_folder(str(model_dir))
    dev_docs = gold_documents(shared, 816) if shared and shape == "small" else constructed_documents(400, seed=5)
    dev = [SentenceText(text=t) for d in dev_docs for t in d.text.split("\n") if t.strip()]
    started = time.perf_counter()
    card = prepare_fast_inference(model, model_dir, dev)
    card["prepare_seconds"] = round(time.perf_counter() - started, 1)
    graphs = onnx_graphs(model, root / f"graphs-{shape}")
    classify = hf_classifier(model, root / f"encoder-{shape}")
    return [
        bench_size(shape, root, shared, n, threads, repeats, fit_sentences, model_dir, model, classify, graphs, card)
        for n in sizes
    ]


def bench_size(
    shape: str,
    root: Path,
    shared: Path | None,
    n_sentences: int,
    threads: int,
    repeats: int,
    fit_sentences: int,
    model_dir: Path,
    model: BertTwoHeadModel,
    classify: Callable[[list[str]], list],
    graphs: dict[str, Path],
    card: dict,
) -> dict:
    documents = gold_documents(shared, n_sentences) if shared else constructed_documents(n_sentences)
    segment_cfg = SegmentConfig()
    out = root / f"out-{shape}"

    def label(quantize: str) -> Variant:
        fresh: list = []

        def setup() -> None:  # the label stage may swap the model's network: a fresh copy each run
            fresh[:] = model_from_folder(str(model_dir))

        def run() -> int:
            shutil.rmtree(out, ignore_errors=True)
            cfg = LabelConfig(output=out / f"{quantize}.parquet", threads=threads, quantize=quantize)
            result = label_documents(cfg, fresh[0], fresh[1], documents, segment_cfg, show_progress=False)
            fresh.append(result.precision)
            return result.sentences

        return Variant(f"label {quantize}", run, setup=setup)

    # The stage's own sentences are what every variant labels.
    first = label("none")
    first.setup()
    first.run()
    rows = pd.read_parquet(out / "none.parquet")
    texts = list(rows.text)
    inputs = [SentenceText(text=t) for t in texts]
    fast = {name: onnx_model(model, graph, threads) for name, graph in graphs.items()}
    auto = label("auto")
    variants = [
        Variant("hf-pipeline", lambda: len(classify(texts))),
        Variant("predict fp32", lambda: len(model.predict_proba(inputs).commitment)),
        *[Variant(f"predict {name}", _predictor(m, inputs)) for name, m in fast.items()],
        label("none"),
        auto,
    ]
    for _ in range(repeats):  # interleaved, so a burst of load elsewhere hits every variant alike
        for variant in variants:
            variant.measure()

    reference = model.predict_proba(inputs)
    agreement = {name: asdict(head_agreement(reference, m.predict_proba(inputs))) for name, m in fast.items()}
    baseline = variants[0].rate
    return {
        "shape": shape,
        "weights": f"sv-bert-mini-cpu-v2, fine-tuned 1 epoch on {fit_sentences} gold train sentences"
        if shape == "small" and shared
        else "random",
        "sentences": len(texts),
        "distinct": len(set(texts)),
        "default_precision": card["default"],
        "variants": [
            {
                "name": v.name,
                "per_s": round(v.rate, 1),
                "ratio": round(v.rate / baseline, 2),
                "peak_mb": round(v.peak_mb),
            }
            for v in variants
        ],
        "stored_agreement_on_dev": {k: v for k, v in card["paths"].items()},
        "agreement_with_fp32_on_this_input": agreement,
        "prepare_seconds": card["prepare_seconds"],
        "median_seconds": {v.name: round(statistics.median(v.seconds), 2) for v in variants},
    }


def onnx_model(model: BertTwoHeadModel, graph: Path, threads: int) -> BertTwoHeadModel:
    fast = copy.copy(model)
    fast.network_ = OnnxTwoHeadNetwork(graph, model.spec.pooling, threads)
    return fast


def _predictor(model: BertTwoHeadModel, inputs: list[SentenceText]) -> Callable[[], int]:
    return lambda: len(model.predict_proba(inputs).commitment)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="small,base")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--small-sentences", default="800,3200", help="comma-separated input sizes")
    parser.add_argument("--base-sentences", default="600", help="comma-separated input sizes")
    parser.add_argument("--fit-sentences", type=int, default=1000, help="gold train sentences for the small model")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # the transformers pipeline runs under the same setting
    shared = Path(os.environ["PIPELINE_SHARED_DIR"]) if os.environ.get("PIPELINE_SHARED_DIR") else None
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {psutil.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}, shared data: {shared}"
    )
    print(f"CPU flags: {' '.join(cpu_flags()) or '(none of avx2/avx512/amx)'}")
    with tempfile.TemporaryDirectory(prefix="label-bench-") as tmp:
        for shape in args.shapes.split(","):
            sizes = [int(n) for n in (args.small_sentences if shape == "small" else args.base_sentences).split(",")]
            for result in bench_shape(shape, Path(tmp), shared, sizes, args.threads, args.repeats, args.fit_sentences):
                print(
                    f"\n== {shape} ({SHAPES[shape]['num_hidden_layers']}x{SHAPES[shape]['hidden_size']}, "
                    f"{result['weights']}): {result['sentences']} sentences, {result['distinct']} distinct, "
                    f"load average {os.getloadavg()[0]:.2f}"
                )
                print(f"default precision (stored check): {result['default_precision']}")
                print(f"{'variant':<20}{'sentences/s':>12}{'x hf-pipeline':>15}{'peak RSS MB':>13}")
                for v in result["variants"]:
                    print(f"{v['name']:<20}{v['per_s']:>12.1f}{v['ratio']:>15.2f}{v['peak_mb']:>13}")
                for mode, a in result["agreement_with_fp32_on_this_input"].items():
                    print(
                        f"{mode} vs fp32 on this input: commitment changed {a['commitment_changed']:.2%}, "
                        f"strategy changed {a['strategy_changed']:.2%}"
                    )
                print(json.dumps(result))
    print(f"\nprocess peak RSS (ru_maxrss): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
