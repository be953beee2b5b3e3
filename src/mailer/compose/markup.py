"""The small inline markup allowed in paragraphs: *emphasis*, **strong** and [links](https://...).

Everything else is text: raw HTML in a paragraph is shown, never interpreted.
"""

from __future__ import annotations

from functools import lru_cache

from markdown_it import MarkdownIt
from markdown_it.token import Token
from markupsafe import Markup

from mailer.urls import check_absolute_url


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    parser = MarkdownIt("zero", {"html": False, "typographer": False}).enable(["emphasis", "link", "escape"])
    parser.validateLink = lambda url: True  # type: ignore[method-assign]  # check_markup rejects bad links with a message
    return parser


def _tokens(text: str) -> list[Token]:
    inline = _parser().parseInline(text)
    return inline[0].children or [] if inline else []


def check_markup(text: str) -> str:
    """Validate the links of a paragraph; return it unchanged."""
    for token in _tokens(text):
        if token.type == "link_open":
            check_absolute_url(str(token.attrs.get("href", "")))
    return text


def links_in(text: str) -> list[str]:
    """The targets of a paragraph's links, as its HTML writes them."""
    return [str(token.attrs.get("href", "")) for token in _tokens(text) if token.type == "link_open"]


def markup_to_html(text: str) -> Markup:
    check_markup(text)
    return Markup(_parser().renderInline(text))


def markup_to_text(text: str) -> str:
    """Plain text for the text alternative: emphasis dropped, links as `label <url>`."""
    parts: list[str] = []
    href = ""
    for token in _tokens(text):
        if token.type == "text":
            parts.append(token.content)
        elif token.type in ("softbreak", "hardbreak"):
            parts.append("\n" if token.type == "hardbreak" else " ")
        elif token.type == "link_open":
            href = str(token.attrs.get("href", ""))
        elif token.type == "link_close":
            parts.append(f" <{href}>")
    return "".join(parts)
