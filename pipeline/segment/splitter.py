"""A rule-based Swedish sentence splitter: one regex pass over candidate boundaries, a few checks each.

Input is cleaned text (see `clean.py`): every newline is a real break (paragraph, heading, list item, table
row). Inside a line a sentence ends at `.`, `!`, `?` or `…` (plus closing quotes or brackets) followed by
whitespace and a capital letter, a digit or an opening quote/dash, unless the word before the stop is an
abbreviation (bl.a., t.ex., prop., kap. ...), an initial (D.C.) or a list number at the start of the line.
A few abbreviations can also end a sentence (m.m., osv., m.fl., etc.); they end one only before a capital.
"""

from __future__ import annotations

import re


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Abbreviations that never end a sentence (compared lower-cased, with the final stop).
_NEVER_FINAL = _words(
    """
    bl.a. t.ex. dvs. d.v.s. s.k. fr.o.m. t.o.m. f.o.m. p.g.a. pga. i.o.m. m.a.o. m.h.a. mha. t.v. f.n. o.a.
    prop. kap. jfr. resp. ca. kl. nr. s. sid. st. p. art. mom. dir. bet. skr. rskr. dnr. prot. prof. dr.
    doc. fil. jur. tekn. f.d. fd. ev. enl. ang. avd. inkl. exkl. tel. tfn. fig. tab. uppl. övers. vol.
    no. vs. kv. hr. s:t. f. sek. proc. milj. mdr. tf. t.f. dep. ordf. sekr. forts. u.a. a.a. a.st.
    prel. ibid. förf. förordn. utg. omr. jämf. motsv. sbl.
    """
)
# Abbreviations that may end a sentence: a boundary only when a capital letter follows.
_MAYBE_FINAL = _words(
    """m.m. mm. osv. o.s.v. m.fl. mfl. etc. o.d. e.d. o.dyl. m.v. kr. ff. red. bil. jan. feb. febr. mar. apr.
    jun. jul. aug. sep. sept. okt. nov. dec."""
)
# A lower-case dotted abbreviation not in the lists (e.g. "t.ex.", "i.s.f."): treated as never final.
_DOTTED = re.compile(r"(?:[a-zåäö]{1,4}\.){2,}")
# An initial or a run of them (D.C., J., U.S.): the name or phrase goes on after it.
_INITIALS = re.compile(r"(?:[A-ZÅÄÖ]\.)+")
_LIST_NUMBER = re.compile(r"(?:\d{1,3}|[a-zA-Z]|[IVXivx]{1,5})\.")

# Candidate boundaries: a line break, or terminal punctuation (with closers) followed by spaces.
_CANDIDATE = re.compile(r"\n+|[.!?…]+[\"'”»’)\]]*(?=[^\S\n]+(\S))")
_OPENERS = "\"'”“„»«’‘([–—-"
_MAX_TOKEN = 32  # longer than any abbreviation or run of initials


def _ends_sentence(text: str, stop: int, token_start: int, follower: str) -> bool:
    """Whether the stop at `stop` ends a sentence, given the next non-space character `follower`."""
    if follower in _OPENERS:
        follower_kind = "open"
    elif follower.isupper():
        follower_kind = "upper"
    elif follower.isdigit():
        follower_kind = "digit"
    else:
        return False  # lower case or other symbol: the sentence goes on
    if text[stop] != ".":
        return True  # ! ? … end a sentence before a capital, digit or opener
    token = text[token_start : stop + 1].lstrip(_OPENERS)
    lowered = token.lower()
    if lowered in _NEVER_FINAL or (_DOTTED.fullmatch(lowered) and lowered not in _MAYBE_FINAL):
        return False
    if lowered in _MAYBE_FINAL:
        return follower_kind == "upper"
    if _INITIALS.fullmatch(token):
        return False
    # "1. Första punkten": a list number at the start of a line, not a sentence
    return not (_LIST_NUMBER.fullmatch(token) and _starts_line(text, token_start))


def _starts_line(text: str, position: int) -> bool:
    """Whether only spaces or a bullet stand between the line start and `position`."""
    while position > 0 and text[position - 1] in " *•-–":
        position -= 1
    return position == 0 or text[position - 1] == "\n"


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans (start, end) over `text`, in order, not overlapping, trimmed of whitespace.

    Every non-whitespace character of `text` lies inside exactly one span.
    """
    spans: list[tuple[int, int]] = []
    start = 0
    for match in _CANDIDATE.finditer(text):
        if match.group(1) is None:  # a line break
            end = match.start()
        else:
            stop = match.start()
            # Look back a bounded window for the word before the stop, so long lines stay linear.
            window = max(0, stop - _MAX_TOKEN)
            token_start = max(window, *(text.rfind(c, window, stop) + 1 for c in " \n\t"))
            if not _ends_sentence(text, stop, token_start, match.group(1)):
                continue
            end = match.end()
        _add_span(text, start, end, spans)
        start = match.end()
    _add_span(text, start, len(text), spans)
    return spans


def _add_span(text: str, start: int, end: int, spans: list[tuple[int, int]]) -> None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if start < end:
        spans.append((start, end))
