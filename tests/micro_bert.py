"""A micro BERT and constructed labelled sentences shared by the BERT and ensemble tests.

Every sentence here is constructed from templates written for the tests; none comes from a corpus.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from pipeline.config import BackboneSize, PretrainConfig, TokenizerConfig
from pipeline.models.pretrain import pretrain_backbone
from pipeline.schema import LabelledSentence

TOPICS = {
    "forebygga": ["radikalisering bland unga", "avhopparverksamheten", "det förebyggande arbetet i skolan"],
    "forhindra": ["terroristbrott", "underrättelsearbetet", "lagföring av terrorresor"],
    "forsvara": [
        "skyddet av offentliga platser",
        "kontrollen av sprängämnen",
        "säkerhetsskyddet på flygplatser",
    ],
}
TEMPLATES = {
    "funding": "Regeringen avsätter {n} miljoner kronor till {topic}.",
    "pending_proposal": "En särskild utredare ska föreslå hur {topic} kan skärpas.",
    "support": "Anhöriga kan få stöd och vägledning om {topic}.",
    "institution": "Myndigheten har fått i uppdrag att samordna {topic}.",
    "none": "Hotet mot Sverige är fortsatt allvarligt enligt bedömningen {n}.",
}


def constructed_labelled(n_docs: int, seed: int, prefix: str, per_doc: int = 6) -> list[LabelledSentence]:
    """Documents of `per_doc` template sentences with labels that follow from the template."""
    rng = random.Random(seed)
    out = []
    for d in range(n_docs):
        for i in range(per_doc):
            commitment = rng.choice(list(TEMPLATES))
            strategy = [] if commitment == "none" else [rng.choice(list(TOPICS))]
            topic = rng.choice(TOPICS[strategy[0]]) if strategy else ""
            text = TEMPLATES[commitment].format(n=rng.randint(2, 90), topic=topic)
            out.append(
                LabelledSentence(
                    id=f"{prefix}{d}#{i}",
                    doc_id=f"{prefix}{d}",
                    sentence_index=i,
                    text=text,
                    strategy=strategy,
                    commitment=commitment,
                )
            )
    return out


def pretrain_micro_backbone(root: Path, steps: int = 30) -> Path:
    """A 2-layer, 32-wide BERT pretrained for `steps` steps on constructed documents, in `root`."""
    corpus = root / "corpus.jsonl"
    rng = random.Random(0)
    extra = constructed_labelled(60, seed=3, prefix="corpus")
    with corpus.open("w", encoding="utf-8") as handle:
        for _ in range(60):
            sentences = rng.sample(extra, 8)
            handle.write(json.dumps({"text": " ".join(s.text for s in sentences)}, ensure_ascii=False) + "\n")
    cfg = PretrainConfig(
        corpus=[corpus],
        output_dir=root / "out",
        tokenizer=TokenizerConfig(vocab_size=300),
        size=BackboneSize(layers=2, hidden=32, heads=2, intermediate=64, max_positions=128),
        block_size=32,
        batch_size=8,
        max_steps=steps,
        checkpoint_every=100,
        heldout_fraction=0.2,
        threads=1,
    )
    return pretrain_backbone(cfg).output_dir
