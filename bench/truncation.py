"""How many documents of a real corpus have a sentence the BERT model cannot read whole (exit code 3)?

    python bench/truncation.py [--corpus $PIPELINE_SHARED_DIR/corpus/extremism.jsonl] [--max-length 128]

Segments every document as `label` does and encodes each sentence with its neighbours as a context model
does, with the shared mini BERT's tokenizer. Counts documents with at least one sentence whose own tokens
were cut, under the old encoding (`longest_first`: the sentence gives way as soon as it is the longer
segment) and under `encode_sentences` (the neighbours give way first; the sentence is cut only when it alone
does not fit), and how many inputs the model runs when such a sentence is read whole in overlapping windows
(`sentence_windows`, what `predict_proba` does now: no sentence is cut). Only the tokenizer runs; no model
is needed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.config import SegmentConfig  # noqa: E402
from pipeline.io.documents import read_documents  # noqa: E402
from pipeline.models.backbone import load_tokenizer  # noqa: E402
from pipeline.models.bert_inputs import encode_sentences  # noqa: E402
from pipeline.models.windows import SentenceWindows, sentence_windows, window_starts  # noqa: E402
from pipeline.schema import Document, with_context  # noqa: E402
from pipeline.segment import segment  # noqa: E402


def _read(windows: SentenceWindows, i: int, length: int) -> list[int | None]:
    """The tokens of sentence `i` (of `length` own tokens) the model reads, placed where its windows start."""
    pieces = [
        [t for t, m in zip(r.input_ids, r.sentence_mask, strict=True) if m]
        for r, owner in zip(windows.rows, windows.owner, strict=True)
        if owner == i
    ]
    if len(pieces) == 1:
        return list(pieces[0])
    read: list[int | None] = [None] * length
    for start, piece in zip(window_starts(length, len(pieces[0])), pieces, strict=True):
        read[start : start + len(piece)] = piece
    return read


def main() -> None:
    shared = Path(os.environ.get("PIPELINE_SHARED_DIR", REPO.parent / "shared"))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=shared / "corpus" / "extremism.jsonl")
    parser.add_argument("--tokenizer", default=str(shared / "models" / "sv-bert-mini-cpu"))
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()

    tokenizer = load_tokenizer(args.tokenizer)
    documents = [d for d in read_documents(args.corpus) if isinstance(d, Document)]
    old_docs = new_docs = alone_docs = sentences_total = old_cut = new_cut = window_rows = window_cut = 0
    for document in documents:
        sentences = segment(document, SegmentConfig()).sentences
        inputs = with_context((s.doc_id, s.text) for s in sentences)
        own_ids = tokenizer([s.text for s in inputs], add_special_tokens=False, verbose=False)["input_ids"]
        own = [len(ids) for ids in own_ids]
        around = [f"{s.previous} {tokenizer.sep_token} {s.next}".strip() for s in inputs]
        old = tokenizer([s.text for s in inputs], around, truncation="longest_first", max_length=args.max_length)
        old_kept = [sum(1 for q in old.sequence_ids(i) if q == 0) for i in range(len(inputs))]
        encoded = encode_sentences(tokenizer, inputs, True, args.max_length)
        new_kept = [sum(e.sentence_mask) for e in encoded]
        windows = sentence_windows(encoded)
        window_rows += len(windows.rows)
        window_cut += sum(_read(windows, i, len(ids)) != ids for i, ids in enumerate(own_ids))
        old_flags = [k < n for k, n in zip(old_kept, own, strict=True)]
        new_flags = [k < n for k, n in zip(new_kept, own, strict=True)]
        alone = [n > args.max_length - 3 for n in own]
        sentences_total += len(inputs)
        old_cut += sum(old_flags)
        new_cut += sum(new_flags)
        old_docs += any(old_flags)
        new_docs += any(new_flags)
        alone_docs += any(alone)
    print(
        f"corpus: {args.corpus} ({len(documents)} documents, {sentences_total} sentences), max_length {args.max_length}"
    )
    print(f"longest_first (old): {old_docs} documents, {old_cut} sentences cut")
    print(f"neighbours first (encode_sentences): {new_docs} documents, {new_cut} sentences cut")
    print(f"sentences longer than the model alone: in {alone_docs} documents")
    print(f"read in windows (now): {window_cut} sentences cut; {window_rows} model inputs for {sentences_total}")


if __name__ == "__main__":
    main()
