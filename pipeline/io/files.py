"""Single files as documents: .txt, .md, .html and Word .docx.

Each reader returns the document text (HTML and Word turned into plain paragraphs, headings as `#`, list
items as `* `) and a title when the file carries one; a file that cannot be read raises `UnreadableFile`.
"""

from __future__ import annotations

import codecs
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


_BOMS = (  # longest first: the UTF-32 LE mark begins with the UTF-16 LE one
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def text_encoding(data: bytes) -> str | None:
    """The encoding a byte-order mark announces, or UTF-16 recognised without one; None: plain UTF-8.

    Without a BOM, text in UTF-16 has a NUL in every other byte for Latin-script characters (Swedish
    included), and on the other side almost none; binary data does not look like that.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return encoding
    head = data[: _SNIFF_BYTES - _SNIFF_BYTES % 2]
    if len(head) >= 8 and b"\x00" in head:
        even, odd = head[0::2], head[1::2]
        for zeros, other, encoding in ((odd, even, "utf-16-le"), (even, odd, "utf-16-be")):
            if zeros.count(0) >= 0.9 * len(zeros) and other.count(0) <= 0.02 * len(other):
                return encoding
    return None


def decode_text(data: bytes) -> str:
    """Text in UTF-8 (with or without a BOM), or in UTF-16/32 with a BOM or recognisably UTF-16 without one.

    Binary content and undecodable bytes raise `UnreadableFile` with the true reason.
    """
    encoding = text_encoding(data)
    if encoding is not None and encoding != "utf-8-sig":
        try:
            return data.decode(encoding)
        except UnicodeDecodeError as exc:
            announced = "its byte-order mark" if encoding in ("utf-16", "utf-32") else "its byte pattern"
            raise UnreadableFile(
                f"not valid {encoding.upper()} (as {announced} says): "
                f"bytes at offset {exc.start} cannot be decoded ({exc.reason})"
            ) from None
    if b"\x00" in data[:_SNIFF_BYTES]:
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
