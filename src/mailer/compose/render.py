"""Issue model -> MJML (Jinja) -> HTML (mjml-python) -> inlined HTML (premailer)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import mjml
from premailer import Premailer

from mailer.compose.model import Issue
from mailer.compose.template_errors import render_template
from mailer.compose.templates import default_templates_dir, environment
from mailer.compose.text import render_text
from mailer.errors import RenderError
from mailer.settings import Settings

PLACEHOLDERS = {
    "email": "{{email}}",
    "name": "{{name}}",
    "unsubscribe_url": "{{unsubscribe_url}}",
}
"""Per-recipient parts left in the email files; sending fills them in for each recipient."""

_STYLE_TAG = re.compile(r"<style(?=[\s>])")
_IGNORE = ' data-premailer="ignore"'
_DOCTYPE = re.compile(r"^<!doctype html>", re.IGNORECASE)
_INLINER_OPTIONS: dict[str, object] = {
    "allow_network": False,  # absolute URLs only, and nothing fetched while rendering
    "allow_loading_external_files": False,
    "disable_link_rewrites": True,
    "preserve_handlebar_syntax": True,
    "strip_important": False,
    "cssutils_logging_level": logging.CRITICAL,
}


@dataclass(frozen=True)
class RenderedIssue:
    slug: str
    email_html: str
    web_html: str
    text: str


def _mjml_to_html(source: str) -> str:
    try:
        html: str = mjml.mjml2html(source, fonts={}, disable_comments=True)
    except Exception as error:  # mjml-python raises a bare Exception subclass from Rust
        raise RenderError(f"MJML: {error}") from None
    return html


def inline_css(html: str, css: str) -> str:
    """Inline our own stylesheet; keep MJML's head styles (resets, media queries, Outlook fixes) as they are.

    premailer would otherwise inline MJML's resets into every element (+24 % size) and
    drop a lower-case doctype, which lxml does not recognise as the document's own.
    """
    marked = _STYLE_TAG.sub(f"<style{_IGNORE}", html)
    marked = _DOCTYPE.sub("<!DOCTYPE html>", marked)
    inliner = Premailer(css_text=css, **_INLINER_OPTIONS)
    inlined: str = inliner.transform(marked, pretty_print=False)
    return inlined.replace(_IGNORE, "")


def render_issue(issue: Issue, slug: str, settings: Settings) -> RenderedIssue:
    """Render every output in memory; nothing touches the disk here."""
    templates_dir = settings.templates_dir or default_templates_dir()
    env = environment(Path(templates_dir))
    css_file = Path(templates_dir) / "inline.css"
    try:
        css = css_file.read_text(encoding="utf-8")
    except OSError as error:
        raise RenderError(f"{css_file}: cannot read: {error.strerror}") from None
    context: dict[str, object] = {
        "issue": issue,
        "branding": settings.branding,
        "web_url": settings.web_url(slug),
        "archive_url": settings.archive_url,
    }
    email_mjml = render_template(env, "issue.mjml", web=False, recipient=PLACEHOLDERS, **context)
    web_mjml = render_template(env, "issue.mjml", web=True, recipient=None, **context)
    return RenderedIssue(
        slug=slug,
        email_html=inline_css(_mjml_to_html(email_mjml), css),
        web_html=inline_css(_mjml_to_html(web_mjml), css),
        text=render_text(env, recipient=PLACEHOLDERS, **context),
    )
