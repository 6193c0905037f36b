"""Single files as documents: .txt, .md, .html and Word .docx.

Each reader returns the document text (HTML and Word turned into plain paragraphs, headings as `#`, list
items as `* `) and a title when the file carries one; a file that cannot be read raises `UnreadableFile`.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from pipeline.io.html import html_to_text

TEXT_SUFFIXES = frozenset({".txt", ".md", ".markdown"})
HTML_SUFFIXES = frozenset({".html", ".htm", ".xhtml"})
DOCX_SUFFIXES = frozenset({".docx"})
FILE_SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | DOCX_SUFFIXES
_SNIFF_BYTES = 8192


class UnreadableFile(ValueError):
    """A file the readers cannot turn into text; the message says why."""


def decode_text(data: bytes) -> str:
    """UTF-8 text (a BOM is dropped); binary content and undecodable bytes raise `UnreadableFile`."""
    head = data[:_SNIFF_BYTES]
    if b"\x00" in head:
        raise UnreadableFile("binary file (contains NUL bytes), not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableFile(
            f"not valid UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start} cannot be decoded "
            "(re-save the file as UTF-8)"
        ) from None


def _docx_text(path: Path) -> tuple[str, str | None]:
    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    try:
        document = docx.Document(str(path))
    except (zipfile.BadZipFile, PackageNotFoundError, KeyError, ValueError) as exc:
        raise UnreadableFile(f"not a readable Word .docx file ({type(exc).__name__}: {exc})") from None
    blocks: list[str] = []
    for element in document.element.body.iterchildren():
        tag = element.tag.rsplit("}", 1)[-1]
        if tag == "p":
            paragraph = Paragraph(element, document)
            text = paragraph.text.strip()
            if not text:
                continue
            style = (paragraph.style.name if paragraph.style is not None else "") or ""
            level = style.rsplit(" ", 1)[-1]
            if style.startswith(("Heading", "Rubrik")) and level.isdigit():
                text = "#" * min(int(level), 6) + " " + text
            elif style.startswith(("List", "Liststycke")):
                text = "* " + text
            blocks.append(text)
        elif tag == "tbl":
            for row in Table(element, document).rows:
                blocks.append("| " + " | ".join(cell.text.strip() for cell in row.cells) + " |")
    title = document.core_properties.title or None
    return "\n\n".join(blocks), title


def read_file(path: Path) -> tuple[str, str | None]:
    """(text, title) of one .txt/.md/.html/.docx file."""
    suffix = path.suffix.lower()
    if suffix in DOCX_SUFFIXES:
        return _docx_text(path)
    if suffix not in FILE_SUFFIXES:
        expected = sorted(FILE_SUFFIXES)
        raise UnreadableFile(f"unsupported file type {suffix or '(none)'}; expected one of {expected}")
    text = decode_text(path.read_bytes())
    if suffix in HTML_SUFFIXES:
        return html_to_text(text)
    return text, None
