"""HTML to plain text: paragraphs as blank lines, headings as `#`, list items as `* `, table cells as `|`.

Built on the standard library's HTMLParser, which tolerates broken markup (HTML soup) without failing.
"""

from __future__ import annotations

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


class _HtmlText(HTMLParser):
    """Collects the text of an HTML document with paragraph structure kept as blank lines."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: str | None = None
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        if tag in _SKIP_TAGS:
            self._skip += 1
        elif tag == "br":
            self.parts.append("\n")
        elif tag == "li":
            self.parts.append("\n* ")
        elif tag in ("td", "th"):
            self.parts.append(" | ")
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n\n")
            if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
                self.parts.append("#" * int(tag[1]) + " ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if tag in _SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCK_TAGS or tag == "li":
            self.parts.append("\n\n" if tag != "li" else "\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title = (self.title or "") + data.strip()
            return
        if not self._skip:
            self.parts.append(data.replace("\n", " "))


def html_to_text(markup: str) -> tuple[str, str | None]:
    """Text of an HTML page and its <title>: paragraphs as blank lines, headings `#`, list items `* `."""
    parser = _HtmlText()
    parser.feed(markup)
    parser.close()
    return "".join(parser.parts), parser.title


def looks_like_html(text: str) -> bool:
    """True when the text carries HTML markup (tags such as <p>, <br>, <div>), not just a stray '<'."""
    return "<" in text and len(_HTML_TAG.findall(text, 0, 200_000)) >= 2
