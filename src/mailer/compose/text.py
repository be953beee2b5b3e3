"""The plain-text alternative, written from the model through its own template (never from the HTML)."""

from __future__ import annotations

import re
import textwrap

from jinja2 import Environment

from mailer.compose.placeholders import Trusted
from mailer.compose.template_errors import render_template

WIDTH = 78
_BLANK_LINE = re.compile(r"\n[ \t]*\n")


def wrap(text: str, indent: str = "", first: str | None = None) -> str:
    """Wrap at 78 columns without breaking URLs or words; blank-line-separated paragraphs stay apart."""
    paragraphs = [" ".join(block.split()) for block in _BLANK_LINE.split(text)]
    wrapped = [
        textwrap.fill(
            paragraph,
            width=WIDTH,
            initial_indent=indent if first is None or number else first,
            subsequent_indent=indent,
            break_long_words=False,
            break_on_hyphens=False,
        )
        for number, paragraph in enumerate(p for p in paragraphs if p)
    ]
    joined = "\n\n".join(wrapped)
    return Trusted(joined) if isinstance(text, Trusted) else joined


def _introduce(label: str) -> str:
    """`Label:` before a URL; a label that already leads on ("More events...", "Questions?") keeps its own ending."""
    label = label.rstrip()
    return label if label.endswith(("...", "…", ":", "?", "!")) else label + ":"


def link_line(label: str, url: str, bullet: str = "* ") -> str:
    """`* Label: https://...` on one line when it fits, else the URL on a line of its own."""
    line = f"{bullet}{_introduce(label)} {url}"
    if len(line) <= WIDTH:
        return line
    indent = " " * len(bullet)
    return wrap(_introduce(label), indent=indent, first=bullet) + "\n" + indent + url


def underline(text: str, char: str = "-") -> str:
    """A heading: wrapped to 78 columns, ruled as wide as its longest line (`=` title and sections, `-` stories)."""
    lines = wrap(text)
    return f"{lines}\n{char * max((len(line) for line in lines.splitlines()), default=0)}"


def render_text(env: Environment, **context: object) -> str:
    return render_template(env, "issue.txt", **context)
