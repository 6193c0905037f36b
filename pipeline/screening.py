"""Content checks: is this document something the Swedish pipeline can use?

`screen_document` returns None for a usable document, or one line saying why not: empty, too long, binary,
mostly markup (HTML soup), or not Swedish. Short texts are not judged on language (too little evidence).
Both entry points screen with it, `ingest` and `label`, so a document gets the same verdict and the same
reason from either (`label` cuts an over-long document instead, and says so, so it passes no length limit).
"""

from __future__ import annotations

import re

from pipeline.io.html import html_to_text, looks_like_html
from pipeline.schema import Document

# Swedish function words whose Norwegian/Danish/English counterparts are spelt differently
# (och/og, att/at, är/er, inte/ikke, för/for, till/til ...), so their share tells Swedish apart.
_SWEDISH_MARKERS = frozenset(
    [
        "och", "att", "är", "inte", "för", "till", "från", "också", "ska", "skall", "samt", "även", "ett",
        "jag", "vid", "sig", "detta", "genom", "enligt", "mellan", "hur", "när", "vara", "måste", "efter",
        "dessa", "vilket", "vilka", "därför", "här", "där", "nu", "bör", "våra", "vårt", "alla",
    ]
)  # fmt: skip
_WORD = re.compile(r"[a-zåäöéü]+")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
_MIN_WORDS_FOR_LANGUAGE = 30
_MIN_SWEDISH_SHARE = 0.02
_MIN_TEXT_SHARE_OF_HTML = 0.05
_SAMPLE_CHARS = 50_000


def swedish_share(text: str) -> tuple[float, int]:
    """(share of Swedish marker words, number of words) over the first 50,000 characters."""
    words = _WORD.findall(text[:_SAMPLE_CHARS].lower())
    if not words:
        return 0.0, 0
    return sum(w in _SWEDISH_MARKERS for w in words) / len(words), len(words)


DUPLICATE_ID = "duplicate id: an earlier document has the same id"


def screen_document(document: Document, *, max_chars: int | None) -> str | None:
    """None when the document is usable, else the reason it is not (one line); `max_chars=None`: no limit."""
    text = document.text
    if not text.strip():
        return "empty document (no text, or only whitespace)"
    if max_chars is not None and len(text) > max_chars:
        return f"document has {len(text):,} characters; the limit is {max_chars:,} (ingest.max_chars)"
    controls = len(_CONTROL.findall(text, 0, _SAMPLE_CHARS))
    if controls > max(3, len(text[:_SAMPLE_CHARS]) // 100):
        return f"looks binary: {controls} control characters in the text"
    if looks_like_html(text):
        visible, _ = html_to_text(text)
        share = len(visible.strip()) / len(text)
        if share < _MIN_TEXT_SHARE_OF_HTML:
            return f"HTML markup soup: only {share:.1%} of the characters are text"
        text = visible
    share, words = swedish_share(text)
    if words >= _MIN_WORDS_FOR_LANGUAGE and share < _MIN_SWEDISH_SHARE:
        return f"does not look like Swedish ({share:.0%} Swedish function words in {words} words)"
    return None
