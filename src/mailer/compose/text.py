"""The plain-text alternative, written from the model through its own template (never from the HTML)."""

from __future__ import annotations

import textwrap

from jinja2 import Environment, TemplateError

from mailer.errors import RenderError

WIDTH = 78


def wrap(text: str, indent: str = "", first: str | None = None) -> str:
    """Wrap at 78 columns without breaking URLs or words; blank-line-separated paragraphs stay apart."""
    return textwrap.fill(
        " ".join(text.split()),
        width=WIDTH,
        initial_indent=indent if first is None else first,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    )


def link_line(label: str, url: str, bullet: str = "* ") -> str:
    """`* Label: https://...` on one line when it fits, else the URL on a line of its own."""
    line = f"{bullet}{label}: {url}"
    if len(line) <= WIDTH:
        return line
    indent = " " * len(bullet)
    return wrap(f"{label}:", indent=indent, first=bullet) + "\n" + indent + url


def underline(text: str, char: str = "-") -> str:
    return f"{text}\n{char * min(len(text), WIDTH)}"


def render_text(env: Environment, **context: object) -> str:
    try:
        return env.get_template("issue.txt").render(**context)
    except TemplateError as error:
        line = getattr(error, "lineno", None)
        raise RenderError(f"issue.txt:{line}: template error: {error}") from None
