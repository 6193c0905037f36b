"""HTML to plain text: paragraphs as blank lines, headings as `#`, list items as `* `, table cells as `|`.

Built on the standard library's HTMLParser, which tolerates broken markup (HTML soup) without failing.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_HTML_TAG = re.compile(
    r"</?(?:p|br|div|span|h[1-6]|li|ul|ol|table|tr|td|th|a|b|i|em|strong|html|body|head|section|article)\b[^>]*>",
    re.IGNORECASE,
)

_BLOCK_TAGS = _words(
    """p div section article header footer main aside nav h1 h2 h3 h4 h5 h6 ul ol table tr
    blockquote pre figure figcaption dl dt dd hr form fieldset address title"""
)
_SKIP_TAGS = frozenset({"script", "style", "noscript", "template", "svg", "head"})


_ENTITY = re.compile(r"&(?:#\d{1,7};?|#[xX][0-9a-fA-F]{1,6};?|[A-Za-z][A-Za-z0-9]{1,31};?)")


class _HtmlText(HTMLParser):
    """Collects the text of an HTML document with paragraph structure kept as blank lines.

    With `markup` given it also records, per text character, the offset in `markup` it came from
    (`offsets`); inserted markers (newlines, `#`, `* `, ` | `) point at their tag.
    """

    def __init__(self, markup: str | None = None) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: str | None = None
        self._skip = 0
        self._in_title = False
        self._markup = markup
        self.offsets: list[int] = []
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", markup)] if markup is not None else []

    def _position(self) -> int:
        line, column = self.getpos()
        return self._line_starts[line - 1] + column

    def _append(self, text: str) -> None:
        self.parts.append(text)
        if self._markup is not None:
            self.offsets += [self._position()] * len(text)

    def _append_data(self, data: str) -> None:
        """Data text mapped back character by character; an entity's characters map to where it starts."""
        self.parts.append(data)
        if self._markup is None:
            return
        raw, j = self._markup, self._position()
        i = 0
        while i < len(data):
            entity = _ENTITY.match(raw, j) if j < len(raw) and raw[j] == "&" else None
            decoded = html.unescape(entity.group(0)) if entity else ""
            if entity and decoded != entity.group(0) and data.startswith(decoded, i):
                self.offsets += [j] * len(decoded)
                i += len(decoded)
                j = entity.end()
            else:
                self.offsets.append(min(j, len(raw) - 1))
                i += 1
                j += 1

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        if tag in _SKIP_TAGS:
            self._skip += 1
        elif tag == "br":
            self._append("\n")
        elif tag == "li":
            self._append("\n* ")
        elif tag in ("td", "th"):
            self._append(" | ")
        elif tag in _BLOCK_TAGS:
            self._append("\n\n")
            if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
                self._append("#" * int(tag[1]) + " ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if tag in _SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCK_TAGS or tag == "li":
            self._append("\n\n" if tag != "li" else "\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title = (self.title or "") + data.strip()
            return
        if not self._skip:
            self._append_data(data.replace("\n", " "))


def html_to_text(markup: str) -> tuple[str, str | None]:
    """Text of an HTML page and its <title>: paragraphs as blank lines, headings `#`, list items `* `."""
    parser = _HtmlText()
    parser.feed(markup)
    parser.close()
    return "".join(parser.parts), parser.title


def html_to_text_with_offsets(markup: str) -> tuple[str, str | None, list[int]]:
    """`html_to_text` plus, per text character, its offset in `markup`."""
    parser = _HtmlText(markup)
    parser.feed(markup)
    parser.close()
    text = "".join(parser.parts)
    return text, parser.title, parser.offsets


def looks_like_html(text: str) -> bool:
    """True when the text carries HTML markup (tags such as <p>, <br>, <div>), not just a stray '<'."""
    return "<" in text and len(_HTML_TAG.findall(text, 0, 200_000)) >= 2
