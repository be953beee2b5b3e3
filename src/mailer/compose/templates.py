"""The Jinja environment shared by the HTML and text renderers."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from mailer.compose.markup import markup_to_html, markup_to_text
from mailer.compose.model import event_dates
from mailer.compose.placeholders import Trusted, guard_braces
from mailer.compose.text import link_line, underline, wrap

PACKAGE_TEMPLATES = Path(__file__).parents[1] / "templates" / "email"
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
    return env
