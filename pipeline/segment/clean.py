"""Cleaning: turn an exported or scraped text into plain paragraphs the splitter can trust.

After `clean_text`, every remaining newline is a real line break (a paragraph, heading, list item or table
row ends there): lines that were hard-wrapped inside a paragraph are joined. The splitter works on this
cleaned text, but a sentence's `start`/`end` must index the document text a reader holds (the input file,
`documents.jsonl`), so `clean_with_offsets` also carries, for every cleaned character, the span of the
original text it came from (`CleanedText.original_span`).
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.io.html import html_to_text, html_to_text_with_offsets, looks_like_html


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Word/pandoc export artefacts such as "[bookmark: Start]" or "[image: logo.png]".
_ARTEFACT = re.compile(r"\[(?:bookmark|image|anchor|pagebreak)(?::[^\]\n]*)?\]", re.IGNORECASE)
_INVISIBLE = re.compile("[\u00ad\u200b\u200c\u200d\u2060\ufeff]")
# Every horizontal space that is not a plain space: tab, NBSP, narrow NBSP, figure space, en/em spaces...
_SPACES = re.compile("[\t\v\f\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
_LINE_BREAKS = re.compile("\r\n?|[\u2028\u2029\u0085]")
_RUNS_OF_SPACES = re.compile(r" {2,}")
_SPACE_AROUND_NEWLINE = re.compile(r" *\n *")
_MANY_NEWLINES = re.compile(r"\n{3,}")
_ENTITY = re.compile(r"&(?:#\d{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")

# A line that starts with one of these begins a new unit (list item, heading, table row, quoted speech).
_LINE_MARKER = re.compile(
    r"(?:[*•·▪◦‣\-–—]|#{1,6}|\d{1,3}[.)]|[a-zåäö][.)]|\([a-zåäö0-9]{1,3}\)|[IVX]{1,5}\.)(?:\s|$)|\|"
)
_OPENERS = "\"'”“„»«’‘([–—-"
_SENTENCE_FINAL = ".!?…:;"
_CLOSERS = "\"'”“»«’‘)]"
# Words that cannot end a heading or a sentence: a line ending with one was wrapped mid-sentence.
_CONTINUATION_WORDS = _words(
    """av och att som i på för till med om den det de en ett från vid mot under eller samt men
    utan inom över efter genom enligt mellan hos än då när där vilket vilka vilken sin sitt sina
    dess deras vår vårt våra vi jag ni är var har hade ska skall kan kommer bör får måste inte
    också även så både dels the of and januari februari mars april maj juni juli augusti september
    oktober november december"""
)


def _keeps_line_break(previous: str, following: str) -> bool:
    """Decide whether a single newline ends a unit (True) or is a hard wrap inside a paragraph (False)."""
    if _LINE_MARKER.match(following) or previous.startswith(("#", "|")):
        return True
    head = following.lstrip(_OPENERS)
    first = head[:1]
    if not first or first.islower():
        return False
    last = previous.rstrip(_CLOSERS)[-1:]
    if last and last in _SENTENCE_FINAL:
        return True
    if last in ",(/&+-–—" or previous.rsplit(" ", 1)[-1].lower() in _CONTINUATION_WORDS:
        return False
    # A line ending in a word, followed by a capitalised or numbered line: the first line was a heading
    # or an item of an unmarked list ("37 Svenska institutet").
    return first.isupper() or first.isdigit()


def _join_hard_wraps(text: str) -> str:
    """Each single newline kept or turned into a space (same length, so offsets carry over).

    A line is judged against the unit it would join, as joined so far (not only its last physical line), so
    that cleaning twice gives what cleaning once gave.
    """
    lines = text.split("\n")
    pieces, first, previous = [lines[0]], lines[0], lines[0]
    for line in lines[1:]:
        # the rule reads only the unit's start and its end: its first line and the line before this one
        unit = previous if previous is first else f"{first} {previous}"
        if previous and line and not _keeps_line_break(unit, line):
            pieces.append(" ")
        else:
            pieces.append("\n")
            first = line
        pieces.append(line)
        previous = line
    return "".join(pieces)


def clean_text(raw: str, *, join_hard_wrapped_lines: bool = True) -> str:
    """Plain text with paragraphs separated by blank lines, single spaces, no invisible characters.

    Removes export artefacts, HTML tags and entities, soft hyphens and zero-width characters; turns
    non-breaking and other odd spaces into plain spaces; joins lines hard-wrapped inside a paragraph.
    """
    text = raw
    if looks_like_html(text):
        text, _ = html_to_text(text)
    elif "&" in text and _ENTITY.search(text):
        text = html.unescape(text)
    text = _ARTEFACT.sub("", text)
    text = _INVISIBLE.sub("", text)
    text = _LINE_BREAKS.sub("\n", text)
    text = _SPACES.sub(" ", text)
    text = _RUNS_OF_SPACES.sub(" ", text)
    text = _SPACE_AROUND_NEWLINE.sub("\n", text)
    text = _MANY_NEWLINES.sub("\n\n", text).strip()
    if join_hard_wrapped_lines:
        text = _join_hard_wraps(text)
    return text


# --- the same cleaning, carrying offsets into the original text -------------------------------------------


@dataclass(frozen=True)
class CleanedText:
    """Cleaned text plus, per cleaned character, the span `[starts[i], ends[i])` of the original it came from."""

    text: str
    starts: list[int]
    ends: list[int]
    original: str
    markup: bool = False  # the original was HTML: spans start at the first kept character

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """The original-text span of the cleaned span `[start, end)` (non-empty).

        Text that cleaning removed just before a sentence (an export artefact, a zero-width character)
        belongs to that sentence, as the gold segmentation counts it; whitespace before it does not.
        """
        begin = self.starts[start]
        if not self.markup:
            floor = self.ends[start - 1] if start > 0 else 0
            gap = self.original[floor:begin]
            if gap.strip():
                begin = floor + len(gap) - len(gap.lstrip())
        return begin, self.ends[end - 1]


class _Tracked:
    """A string under regex substitution that remembers where each of its characters came from."""

    def __init__(self, text: str, starts: list[int], ends: list[int]) -> None:
        self.text, self.starts, self.ends = text, starts, ends

    def sub(self, pattern: re.Pattern[str], repl: str | Callable[[re.Match[str]], str]) -> None:
        pieces: list[str] = []
        starts: list[int] = []
        ends: list[int] = []
        position = 0
        for match in pattern.finditer(self.text):
            a, b = match.span()
            pieces.append(self.text[position:a])
            starts += self.starts[position:a]
            ends += self.ends[position:a]
            new = repl(match) if callable(repl) else match.expand(repl)
            pieces.append(new)
            if len(new) == b - a:  # same length: character for character
                starts += self.starts[a:b]
                ends += self.ends[a:b]
            elif new:  # shorter or longer: every new character stands for the whole match
                starts += [self.starts[a]] * len(new)
                ends += [self.ends[b - 1]] * len(new)
            position = b
        if position == 0 and not pieces:
            return
        pieces.append(self.text[position:])
        self.starts = starts + self.starts[position:]
        self.ends = ends + self.ends[position:]
        self.text = "".join(pieces)

    def strip(self) -> None:
        left = len(self.text) - len(self.text.lstrip())
        right = len(self.text.rstrip())
        self.text = self.text[left:right]
        self.starts, self.ends = self.starts[left:right], self.ends[left:right]


def clean_with_offsets(raw: str, *, join_hard_wrapped_lines: bool = True) -> CleanedText:
    """`clean_text(raw)` (the same text, character for character) with each character's original span.

    HTML input maps through the parser's positions (inserted markers such as `#` or `*` point at their tag);
    entities map to the whole entity, removed characters (soft hyphens, artefacts, extra spaces) to nothing,
    so a sentence's original span runs from its first kept character to its last.
    """
    markup = looks_like_html(raw)
    if markup:
        text, _, starts = html_to_text_with_offsets(raw)
        tracked = _Tracked(text, starts, [min(s + 1, len(raw)) for s in starts])
    else:
        tracked = _Tracked(raw, list(range(len(raw))), list(range(1, len(raw) + 1)))
        if "&" in raw and _ENTITY.search(raw):
            tracked.sub(_ENTITY, lambda m: html.unescape(m.group(0)))
    tracked.sub(_ARTEFACT, "")
    tracked.sub(_INVISIBLE, "")
    tracked.sub(_LINE_BREAKS, "\n")
    tracked.sub(_SPACES, " ")
    tracked.sub(_RUNS_OF_SPACES, " ")
    tracked.sub(_SPACE_AROUND_NEWLINE, "\n")
    tracked.sub(_MANY_NEWLINES, "\n\n")
    tracked.strip()
    if join_hard_wrapped_lines:
        text = tracked.text
        joined = _join_hard_wraps(text)
        # joining turns single newlines into spaces: same length, so the offsets carry over unchanged
        tracked = _Tracked(joined, tracked.starts, tracked.ends)
    return CleanedText(tracked.text, tracked.starts, tracked.ends, raw, markup)
