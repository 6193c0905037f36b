"""The structure of a minister's answer: heading metadata and a role for every sentence.

A written answer reads: heading ("Svar på fråga 2020/21:2868 av <asker> (<party>) <title>", possibly
"... och på fråga 2020/21:2870 av ..."), the question restated ("X har frågat mig ..."), body paragraphs,
a closing paragraph, a dateline ("Stockholm den 26 maj 2021") and the minister's signature. Other documents
get `heading` for heading lines and `body` for the rest.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from pipeline.schema import Document, SentenceRole

_MONTHS = (
    "januari", "februari", "mars", "april", "maj", "juni",
    "juli", "augusti", "september", "oktober", "november", "december",
)  # fmt: skip
_QUESTION_REF = re.compile(
    r"(?:Svar\s+på|och\s+på|samt\s+på|,)\s+(?:skriftlig\s+)?(?P<kind>fråga|interpellation)\s+"
    r"(?P<id>\d{4}/\d{2}:\d+)\s+av\s+(?P<asker>[^()\n]+?)\s+\((?P<party>[^()\n]{1,6})\)\s*"
)
_DATELINE = re.compile(
    r"(?P<place>[A-ZÅÄÖ][\w\- ]{1,40}?),?\s+den\s+(?P<day>\d{1,2})\s+(?P<month>"
    + "|".join(_MONTHS)
    + r")\s+(?P<year>\d{4})\.?",
    re.IGNORECASE,
)
_RESTATED_QUESTION = re.compile(
    r"har\s+(?:också\s+|även\s+|vidare\s+)?(?:frågat|ställt\s+(?:en\s+|följande\s+)?frågor?|frågan)"
    r"|\bfrågar\s+(?:mig|om|vilka|vad|hur|när)\b|\bundrar\s+(?:också\s+|även\s+)?(?:om|vilka|vad|hur|när)\b"
    r"|(?:frågan|frågorna)\s+har\s+överlämnats\s+till\s+mig"
    r"|det\s+är\s+jag\s+som\s+ska\s+svara\s+på\s+fråg",
    re.IGNORECASE,
)
_LIST_ITEM = re.compile(r"[*•\-–]\s|\d{1,3}[.)]\s|[a-zåäö]\)\s")
_SIGNATURE = re.compile(r"[A-ZÅÄÖÉ][\w\-]+(?:\s+[A-ZÅÄÖÉ][\w\-]+){1,3}")
_TERMINAL = ".!?…:;"
_MAX_HEADING_WORDS = 15


class AnsweredQuestion(BaseModel):
    """One question an answer replies to, as named in its heading."""

    id: str  # "2020/21:2868"
    kind: str  # "fråga" or "interpellation"
    asker: str
    party: str
    title: str


class AnswerMetadata(BaseModel):
    """What the structure of an answer tells about it; stored as `Document.metadata["answer"]`."""

    questions: list[AnsweredQuestion]
    date: str | None = None  # ISO date from the dateline
    place: str | None = None
    minister: str | None = None  # the signature, when the text carries one

    def as_metadata(self) -> dict[str, Any]:
        data = self.model_dump()
        if self.questions:  # the first question's asker, for quick filtering
            data["asker"] = self.questions[0].asker
            data["party"] = self.questions[0].party
        return data


def parse_heading(line: str) -> list[AnsweredQuestion]:
    """The questions named in an answer heading; empty when the line is not such a heading."""
    if not line.lstrip("#* ").startswith("Svar på"):
        return []
    matches = list(_QUESTION_REF.finditer(line))
    questions = []
    for i, match in enumerate(matches):
        title_end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
        questions.append(
            AnsweredQuestion(
                id=match["id"],
                kind=match["kind"].lower(),
                asker=" ".join(match["asker"].split()),
                party=match["party"].strip(),
                title=" ".join(line[match.end() : title_end].split()),
            )
        )
    return questions


def parse_dateline(sentence: str) -> tuple[str, str] | None:
    """(place, ISO date) when the sentence is a dateline such as "Stockholm den 26 maj 2021"."""
    match = _DATELINE.fullmatch(sentence.strip())
    if not match:
        return None
    month = _MONTHS.index(match["month"].lower()) + 1
    return match["place"].strip(), f"{int(match['year']):04d}-{month:02d}-{int(match['day']):02d}"


def _line_numbers(text: str, spans: Sequence[tuple[int, int]]) -> list[int]:
    """For each span, the index of the line it starts on (lines separated by newlines)."""
    numbers, line, position = [], 0, 0
    for start, _ in spans:
        line += text.count("\n", position, start)
        position = start
        numbers.append(line)
    return numbers


def _is_heading_line(sentence: str, whole_line: bool) -> bool:
    if sentence.startswith("#"):
        return True
    return (
        whole_line
        and sentence[-1] not in _TERMINAL
        and not sentence.startswith(("*", "-", "–", "•", "|"))
        and len(sentence.split()) <= _MAX_HEADING_WORDS
    )


def describe_answer(cleaned: str) -> AnswerMetadata | None:
    """Metadata of a minister's answer from its cleaned text; None when the text is not an answer.

    An answer has a "Svar på fråga ..." heading on its first line, or restates a question near the start
    and ends with a dateline.
    """
    lines = [line.strip() for line in cleaned.split("\n") if line.strip()]
    if not lines:
        return None
    questions = parse_heading(lines[0])
    tail = len(lines) - 1
    dateline_at = next((i for i in range(tail, max(tail - 3, 0) - 1, -1) if parse_dateline(lines[i])), None)
    if not questions and (dateline_at is None or not _RESTATED_QUESTION.search(" ".join(lines[:3]))):
        return None
    metadata = AnswerMetadata(questions=questions)
    if dateline_at is not None:
        metadata.place, metadata.date = parse_dateline(lines[dateline_at]) or (None, None)
        names = [line for line in lines[dateline_at + 1 :] if _SIGNATURE.fullmatch(line)]
        metadata.minister = names[0] if names else None
    return metadata


def attach_answer(document: Document, answer: AnswerMetadata | None) -> Document:
    """The document with `metadata["answer"]` (and a missing date) filled in when it is an answer."""
    if answer is None:
        return document
    return document.model_copy(
        update={
            "metadata": {**document.metadata, "answer": answer.as_metadata()},
            "date": document.date or answer.date,
        }
    )


def document_facts(document: Document) -> dict[str, str | None]:
    """Who answered, when, and about what: the `title`, `date`, `minister` and `question_title` columns of
    every labelled row, from the document's own fields first, then its metadata (ingest's, e.g. the Riksdag's),
    then the structure of its text (`metadata["answer"]`: heading, dateline, signature). None where nothing
    says."""
    metadata = document.metadata
    answer = metadata.get("answer") if isinstance(metadata.get("answer"), dict) else {}
    question_title = _joined(answer.get("questions")) or _joined(metadata.get("questions"))
    return {
        "title": _text(document.title) or _text(metadata.get("title")) or question_title,
        "date": _text(document.date) or _text(metadata.get("date")) or _text(answer.get("date")),
        "minister": _text(metadata.get("minister")) or _text(answer.get("minister")),
        "question_title": question_title,
    }


def _text(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _joined(questions: object) -> str | None:
    """The titles of the questions answered, `; `-joined (questions given as ids only have none)."""
    if not isinstance(questions, list):
        return None
    titles = [t for q in questions if isinstance(q, dict) and (t := _text(q.get("title")))]
    return "; ".join(dict.fromkeys(titles)) or None


_DETECT = object()  # assign_roles: look for the answer structure itself


def assign_roles(
    text: str,
    spans: Sequence[tuple[int, int]],
    *,
    answer_structure: bool = True,
    answer: AnswerMetadata | object | None = _DETECT,
) -> list[SentenceRole]:
    """A role for each sentence span of cleaned `text`.

    Heading lines are `heading` in every document; the answer roles (question, closing, dateline,
    signature) are given only when `describe_answer` recognises the text as an answer.
    """
    sentences = [text[s:e] for s, e in spans]
    lines = _line_numbers(text, spans)
    n = len(spans)
    roles: list[SentenceRole] = ["body"] * n
    for i, sentence in enumerate(sentences):
        alone = (i == 0 or lines[i - 1] != lines[i]) and (i + 1 == n or lines[i + 1] != lines[i])
        # The last sentence, and a lead-in to a list ("Utredaren ska bland annat"), are not headings.
        if i + 1 < n and not _LIST_ITEM.match(sentences[i + 1]) and _is_heading_line(sentence, alone):
            roles[i] = "heading"
    if answer is _DETECT:  # callers that already ran `describe_answer` pass its result
        answer = describe_answer(text) if answer_structure and n else None
    if not isinstance(answer, AnswerMetadata) or not n:
        return roles

    heading_count = 0
    if answer.questions:
        while heading_count < n and lines[heading_count] == lines[0]:
            roles[heading_count] = "heading"
            heading_count += 1
    for i in range(heading_count, min(n, heading_count + 6)):
        if lines[i] <= lines[heading_count] + 2 and _RESTATED_QUESTION.search(sentences[i]):
            roles[i] = "question"
    dateline_at = next((i for i in range(n - 1, max(n - 4, 0) - 1, -1) if parse_dateline(sentences[i])), None)
    if dateline_at is None:
        return roles
    roles[dateline_at] = "dateline"
    for i in range(dateline_at + 1, n):
        roles[i] = "signature"
    # The paragraph just before the dateline closes the answer, unless it is the only body paragraph.
    body_lines = [lines[i] for i in range(dateline_at) if roles[i] == "body"]
    if len(set(body_lines)) > 1:
        for i in range(dateline_at):
            if lines[i] == body_lines[-1] and roles[i] == "body":
                roles[i] = "closing"
    return roles
