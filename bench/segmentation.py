"""Sentence-boundary benchmark on the gold segmentation set, side by side with blingfire, syntok and spaCy.

    python bench/segmentation.py [path/to/segmentation.jsonl] [--errors]

Without a path the gold file is read from $PIPELINE_SHARED_DIR/gold/segmentation.jsonl. Scoring follows the
shared README: a boundary is the position of a segment's first character counted over the document text with
all whitespace and U+00AD, U+200B, U+200C, U+200D, U+FEFF removed; precision, recall and F1 are micro-averaged
over all documents. Throughput is UTF-8 megabytes of raw text per second on one core (ours includes cleaning),
also given as a ratio to the fastest system. `--errors` prints our missed and spurious boundaries.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import SegmentConfig
from pipeline.schema import Document
from pipeline.segment import segment_document
from pipeline.segment.clean import clean_text
from pipeline.segment.splitter import split_sentences

_SEGMENT = SegmentConfig()

_INVISIBLE = frozenset("\u00ad\u200b\u200c\u200d\ufeff")


def _visible(text: str) -> str:
    return "".join(c for c in text if not c.isspace() and c not in _INVISIBLE)


def _starts_from_sentences(sentences: list[str]) -> list[int]:
    """Boundaries from a list of sentence strings that cover the text in order."""
    starts, position = [], 0
    for sentence in sentences:
        length = len(_visible(sentence))
        if length:
            starts.append(position)
            position += length
    return starts


def _starts_from_offsets(text: str, offsets: list[int]) -> list[int]:
    """Boundaries from character offsets of sentence starts in `text`."""
    visible_before, count = [], 0
    for c in text:
        visible_before.append(count)
        if not c.isspace() and c not in _INVISIBLE:
            count += 1
    visible_before.append(count)
    return sorted({visible_before[o] for o in offsets if o < len(text) and visible_before[o] < count})


def _map_positions(source: str, target: str, positions: list[int]) -> list[int]:
    """Carry visible-character positions from cleaned `source` to raw `target`.

    Cleaning deletes export artefacts ("[bookmark: Start]"); deleted text belongs to the sentence after it,
    so a boundary just after a deletion maps to where the deleted run began.
    """
    if source == target:
        return positions
    blocks = difflib.SequenceMatcher(None, source, target, autojunk=False).get_matching_blocks()
    mapped = []
    for pos in positions:
        previous_end = 0
        for a, b, size in blocks:
            if a <= pos < a + size:
                mapped.append(previous_end if pos == a else b + pos - a)
                break
            previous_end = b + size
    return sorted(set(mapped))


def ours(text: str) -> list[int]:
    """Boundaries straight from the pipeline's sentence offsets, which index the document text itself."""
    return _starts_from_offsets(text, [s.start for s in segment_document(Document(id="gold", text=text), _SEGMENT)])


def ours_cleaned(text: str) -> list[int]:
    """The splitter on the cleaned text, mapped back by alignment (a cross-check of the offsets above)."""
    cleaned = clean_text(text)
    starts = _starts_from_offsets(cleaned, [s for s, _ in split_sentences(cleaned)])
    return _map_positions(_visible(cleaned), _visible(text), starts)


def _peers() -> dict[str, Callable[[str], list[int]]]:
    peers: dict[str, Callable[[str], list[int]]] = {}
    try:
        import blingfire

        peers["blingfire"] = lambda text: _starts_from_sentences(blingfire.text_to_sentences(text).split("\n"))
    except ImportError:
        print("blingfire not installed: skipped", file=sys.stderr)
    try:
        from syntok import segmenter

        def syntok_starts(text: str) -> list[int]:
            offsets = [s[0].offset for p in segmenter.analyze(text) for s in p if s]
            return _starts_from_offsets(text, offsets)

        peers["syntok"] = syntok_starts
    except ImportError:
        print("syntok not installed: skipped", file=sys.stderr)
    try:
        import spacy

        nlp = spacy.blank("sv")
        nlp.add_pipe("sentencizer")
        nlp.max_length = 50_000_000
        peers["spacy-sentencizer"] = lambda text: _starts_from_offsets(text, [s.start_char for s in nlp(text).sents])
    except ImportError:
        print("spacy not installed: skipped", file=sys.stderr)
    return peers


@dataclass
class Score:
    system: str
    precision: float
    recall: float
    f1: float
    mb_per_s: float


def score(system: str, split: Callable[[str], list[int]], docs: list[dict], repeats: int) -> Score:
    true_positive = predicted = gold = 0
    for doc in docs:
        truth = set(_starts_from_sentences(doc["sentences"]))
        guess = set(split(doc["text"]))
        true_positive += len(truth & guess)
        predicted += len(guess)
        gold += len(truth)
    texts = [doc["text"] for doc in docs]
    megabytes = sum(len(t.encode("utf-8")) for t in texts) * repeats / 1e6
    runner = _RAW_RUNNERS.get(system, split)
    began = time.perf_counter()
    for _ in range(repeats):
        for text in texts:
            runner(text)
    elapsed = time.perf_counter() - began
    precision = true_positive / predicted if predicted else 0.0
    recall = true_positive / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Score(system, precision, recall, f1, megabytes / elapsed)


# Throughput is measured on each system's own segmentation call, not on our scoring glue.
# "ours" is the whole segment stage (cleaning, splitting, roles, offsets into the document text);
# "ours-splitter" only cleaning and splitting, scored by aligning the cleaned text back to the original.
_RAW_RUNNERS: dict[str, Callable[[str], object]] = {
    "ours": lambda text: segment_document(Document(id="gold", text=text), _SEGMENT),
    "ours-splitter": lambda text: split_sentences(clean_text(text)),
}


def print_errors(docs: list[dict]) -> None:
    for doc in docs:
        visible = _visible(doc["text"])
        truth = set(_starts_from_sentences(doc["sentences"]))
        guess = set(ours(doc["text"]))
        for kind, positions in (("missed", truth - guess), ("spurious", guess - truth)):
            for pos in sorted(positions):
                before, after = visible[max(0, pos - 40) : pos], visible[pos : pos + 30]
                print(f"{kind:8} {doc['id']}: ...{before}‖{after}...")


def main(argv: list[str]) -> None:
    args = [a for a in argv if not a.startswith("--")]
    if args:
        path = Path(args[0])
    elif os.environ.get("PIPELINE_SHARED_DIR"):
        path = Path(os.environ["PIPELINE_SHARED_DIR"]) / "gold" / "segmentation.jsonl"
    else:
        sys.exit("usage: python bench/segmentation.py PATH/segmentation.jsonl (or set PIPELINE_SHARED_DIR)")
    if not path.is_file():
        sys.exit(f"{path}: gold segmentation file not found")
    docs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    repeats = 5
    scores = [score("ours", ours, docs, repeats), score("ours-splitter", ours_cleaned, docs, repeats)]
    scores += [score(name, split, docs, repeats) for name, split in _peers().items()]
    fastest = max(s.mb_per_s for s in scores)
    n_chars = sum(len(d["text"]) for d in docs)
    print(f"gold: {path} ({len(docs)} documents, {n_chars:,} characters)")
    print(f"{'system':18} {'precision':>9} {'recall':>7} {'F1':>7} {'MB/s':>8} {'speed':>6}")
    for s in scores:
        print(
            f"{s.system:18} {s.precision:9.4f} {s.recall:7.4f} {s.f1:7.4f} {s.mb_per_s:8.2f} "
            f"{s.mb_per_s / fastest:6.2f}"
        )
    if "--errors" in argv:
        print_errors(docs)


if __name__ == "__main__":
    main(sys.argv[1:])
