"""Constructed data for the tests (written for them, taken from no source).

Labelled sentences for the evaluation tests: six short documents; every commitment type and every strategy
label occurs at least twice, so tiny models can be trained on them and grouped splits have something to group.
Answer-like documents (`make_documents`), and one Swedish and one English paragraph for the tests of reading
and screening (the English one must be refused as not Swedish).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from pipeline.schema import Document, LabelledSentence

# (doc_id, text, strategy, commitment) - constructed Swedish sentences
CONSTRUCTED: list[tuple[str, str, list[str], str]] = [
    (
        "doc-a",
        "Regeringen avsätter 40 miljoner kronor till kommunernas förebyggande arbete.",
        ["forebygga"],
        "funding",
    ),
    ("doc-a", "Hotbilden mot Sverige beskrivs som förhöjd.", [], "none"),
    ("doc-a", "Anhöriga som är oroliga kan få stöd till samtal med en rådgivare.", ["forebygga"], "support"),
    ("doc-a", "Tack för frågan.", [], "none"),
    ("doc-b", "En utredare ska föreslå skärpta regler om sprängämnen.", ["forsvara"], "pending_proposal"),
    ("doc-b", "Säkerhetspolisen har fått i uppdrag att förhindra terrorbrott.", ["forhindra"], "institution"),
    ("doc-b", "Våldsbejakande extremism är ett hot mot demokratin.", [], "none"),
    (
        "doc-b",
        "Anslaget till polisens kontraterrorism höjs med 25 miljoner kronor.",
        ["forhindra"],
        "funding",
    ),
    (
        "doc-c",
        "Förslaget om skydd av offentliga platser bereds nu i departementet.",
        ["forsvara"],
        "pending_proposal",
    ),
    ("doc-c", "Skolor får vägledning om hur radikalisering kan upptäckas.", ["forebygga"], "support"),
    ("doc-c", "Det är viktigt att vi står enade.", [], "none"),
    ("doc-c", "En ny myndighet har inrättats för att samordna krisberedskapen.", ["forsvara"], "institution"),
    ("doc-d", "Regeringen avser att skärpa straffen för terroristbrott.", ["forhindra"], "pending_proposal"),
    ("doc-d", "Frågan ställdes av en ledamot.", [], "none"),
    (
        "doc-d",
        "Kommunerna får bidrag för att förebygga och försvåra attacker.",
        ["forebygga", "forsvara"],
        "funding",
    ),
    ("doc-d", "Polisen ansvarar för att förhindra attacker mot folksamlingar.", ["forhindra"], "institution"),
    ("doc-e", "Stockholm den 3 maj.", [], "none"),
    (
        "doc-e",
        "Utbildning erbjuds till socialtjänsten om avhopp från extrema miljöer.",
        ["forebygga"],
        "support",
    ),
    (
        "doc-e",
        "Kontrollen av vapen vid gränsen ska ses över i en utredning.",
        ["forsvara"],
        "pending_proposal",
    ),
    ("doc-e", "Detta är en allvarlig fråga för hela samhället.", [], "none"),
    ("doc-f", "Medel tillförs Säkerhetspolisen för att förhindra terrorism.", ["forhindra"], "funding"),
    (
        "doc-f",
        "Ett nationellt center har inrättats mot våldsbejakande extremism.",
        ["forebygga"],
        "institution",
    ),
    ("doc-f", "Handboken ger stöd till kommuner som möter radikalisering.", ["forebygga"], "support"),
    (
        "doc-f",
        "Arbetet ska förebygga, förhindra och försvåra.",
        ["forebygga", "forhindra", "forsvara"],
        "none",
    ),
]


def constructed_sentences() -> list[LabelledSentence]:
    """The constructed set as LabelledSentence objects, with ids `doc#index`."""
    out: list[LabelledSentence] = []
    counters: dict[str, int] = {}
    for doc_id, text, strategy, commitment in CONSTRUCTED:
        index = counters.get(doc_id, 0)
        counters[doc_id] = index + 1
        out.append(
            LabelledSentence(
                id=f"{doc_id}#{index}",
                doc_id=doc_id,
                text=text,
                strategy=list(strategy),
                commitment=commitment,
                sentence_index=index,
            )
        )
    return out


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


# Constructed answer-like paragraphs; a document is a few of them (so sentences repeat across documents, as
# headings and closing lines do in real answers).
PARAGRAPHS = [
    "Regeringen avsätter 40 miljoner kronor till kommunernas förebyggande arbete mot radikalisering.",
    "En utredare ska föreslå skärpta regler om sprängämnen. Förslaget bereds nu i departementet.",
    "Anhöriga som är oroliga kan få stöd till samtal med en rådgivare.",
    "Säkerhetspolisen har fått i uppdrag att förhindra terrorbrott. Hotbilden beskrivs som förhöjd.",
    "Handboken ger stöd till kommuner som möter radikalisering. Tack för frågan.",
    "Ett nationellt center har inrättats mot våldsbejakande extremism.",
]


def make_documents(n: int, seed: int = 0) -> list[Document]:
    """`n` constructed answers: a dateline and one to four of PARAGRAPHS, with a title, a date and metadata."""
    rng = random.Random(seed)
    return [
        Document(
            id=f"svar-{i:04d}",
            title=f"Svar på skriftlig fråga {i}",
            date="2021-05-26",
            text="Stockholm den 26 maj 2021\n\n" + "\n\n".join(rng.sample(PARAGRAPHS, rng.randint(1, 4))),
            metadata={"constructed": True, "number": i},
        )
        for i in range(n)
    ]


# One answer-like Swedish paragraph, and the same in English (screening refuses it: not Swedish).
SWEDISH = (
    "Regeringen har i dag beslutat att ge Myndigheten för exempel ett uppdrag. Uppdraget ska redovisas "
    "senast den 1 december. Det är viktigt att arbetet mot våldsbejakande extremism stärks, och att "
    "kommunerna får stöd i sitt förebyggande arbete. Jag kommer att följa frågan noga."
)
ENGLISH = (
    "The government has today decided to give the agency a new assignment. The assignment shall be "
    "reported by the first of December. It is important that the work against violent extremism is "
    "strengthened and that municipalities receive support in their preventive work. I will follow it."
)
