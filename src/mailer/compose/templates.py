"""The Jinja environment shared by the HTML and text renderers."""

from __future__ import annotations

import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from mailer.compose.markup import markup_to_html, markup_to_text
from mailer.compose.model import event_dates
from mailer.compose.placeholders import Trusted, guard_braces
from mailer.compose.text import link_line, underline, wrap

PACKAGE_TEMPLATES = Path(__file__).parents[1] / "templates" / "email"
T = TypeVar("T")
SOURCE_TEMPLATES = Path(__file__).resolve().parents[3] / "templates" / "email"


def default_templates_dir() -> Path:
    """templates/email/ of the checkout, or the copy a wheel ships inside the package."""
    return SOURCE_TEMPLATES if SOURCE_TEMPLATES.is_dir() else PACKAGE_TEMPLATES


def _join_names(names: list[str]) -> str:
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def _guarded(value: object) -> object:
    """Every value a template writes, except our own markers (Trusted): no `{{` from content survives."""
    if isinstance(value, Trusted):
        return value
    if isinstance(value, Markup):
        return Markup(guard_braces(str(value)))
    if isinstance(value, str):
        return guard_braces(value)
    return value


def _rows(items: list[T], most: int) -> list[list[T]]:
    """Items in as few rows of at most `most` as they fit, the rows as even as can be (5 in 3: 3 and 2, 4: 2 and 2)."""
    if not items:
        return []
    count = -(-len(items) // most)
    size = -(-len(items) // count)
    return [items[start : start + size] for start in range(0, len(items), size)]


def _text_lines(text: str, width: int, font_px: int = 15) -> int:
    """How many lines a bold label takes in `width` pixels, erring long: capitals and wide (East Asian) characters
    take more room than lower case. Outlook's VML buttons have a fixed height, so they are made this tall."""
    if width <= 0:
        return len(text) or 1
    em = {"W": 1.0, "F": 1.0}
    advance = sum(
        em.get(unicodedata.east_asian_width(char), 0.78 if char.isupper() or char in "mwMW@%" else 0.6) for char in text
    )
    return max(1, -(-int(advance * font_px) // width))


@lru_cache(maxsize=8)
def environment(templates_dir: Path) -> Environment:
    """Templates named .mjml/.html are escaped; .txt ones are not. Typos in names fail the render.

    Content cannot forge the per-recipient markers: see placeholders.guard_braces.
    """
    env = Environment(
        finalize=_guarded,
        loader=FileSystemLoader(templates_dir),
        autoescape=select_autoescape(enabled_extensions=("mjml", "html"), default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=True,
    )
    env.filters["markup"] = markup_to_html
    env.filters["markup_text"] = markup_to_text
    env.filters["event_dates"] = event_dates
    env.filters["join_names"] = _join_names
    env.filters["wrap"] = wrap
    env.filters["link_line"] = link_line
    env.filters["underline"] = underline
    env.filters["rows"] = _rows
    env.filters["text_lines"] = _text_lines
    return env
