"""The Jinja environment of every page the web side serves (preview, archive, subscribe and unsubscribe).

Pages are HTML throughout, so everything is escaped; a misspelt name fails loudly instead of
showing a blank. The email templates have their own environment (compose/templates.py):
they are MJML and text, with the issue's filters.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

HERE = Path(__file__).parent


@lru_cache(maxsize=4)
def page_templates(folder: str) -> Environment:
    """The templates in one of this package's page folders: archive_page, preview_page, public_page."""
    return Environment(
        loader=FileSystemLoader(HERE / folder),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
