"""Issue model -> MJML (Jinja) -> HTML (mjml-python) -> inlined HTML (premailer)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import mjml
from premailer import Premailer

from mailer.compose.images import ImageProblem, PreparedImage
from mailer.compose.issue_images import branding_images, local_images, prepared
from mailer.compose.model import Issue
from mailer.compose.placeholders import MARKER_KEYS, GreetingLine, Trusted, greeting_lines
from mailer.compose.template_errors import render_template
from mailer.compose.templates import default_templates_dir, environment
from mailer.compose.text import render_text
from mailer.errors import RenderError
from mailer.settings import Settings

IMAGES_FOLDER = "images"
"""Beside web.html: build/<issue>/images/, and <public_url>/<issue>/images/ once published."""

PLACEHOLDERS = {key: Trusted("{{" + key + "}}") for key in MARKER_KEYS}
"""Per-recipient parts left in the email files; sending fills them in for each recipient.

The greeting comes as `greetings` (placeholders.greeting_lines): `Dear {{name}},` in a
`{{#name}}...{{/name}}` section, the default_greeting in a `{{^name}}...{{/name}}` one.
"""

_STYLE_TAG = re.compile(r"<style(?=[\s>])")
_IGNORE = ' data-premailer="ignore"'
_DOCTYPE = re.compile(r"^<!doctype html>", re.IGNORECASE)
_OUTLOOK_SEAM = re.compile(r"<!\[endif\]-->((?:\s|\{\{[#^/]\w+\}\})*)<!--\[if mso \| IE\]>")
"""Where one Outlook-only block ends and the next begins: stock MJML's mergeOutlookConditionnals joins them.

Section markers between the two (`{{#name}}` around a greeting) move into the joined block, so a recipient
whose section is dropped gets the same bytes as an issue without that section.
"""
_SECTION_MARKER = re.compile(r"\{\{[#^/]\w+\}\}")
_EMAIL_ROLE = 'aria-roledescription="email" class="dm" role="article"'
"""How mjml-python marks the body of an email for screen readers; the web version is a page, whose body is its main landmark."""
_WEB_ROLE = 'class="dm" role="main"'
_MJML_PREVIEW = '<div style="display:none;font-size:1px;color:#ffffff;line-height:1px;'
"""How mjml-python starts `<mj-preview>`: white text, which SpamAssassin scores as HTML_FONT_LOW_CONTRAST."""
_PREHEADER = '<div style="display:none;mso-hide:all;font-size:1px;line-height:1px;'
_INLINER_OPTIONS: dict[str, object] = {
    "allow_network": False,  # absolute URLs only, and nothing fetched while rendering
    "allow_loading_external_files": False,
    "disable_link_rewrites": True,
    "preserve_handlebar_syntax": True,
    "strip_important": False,
    # premailer copies an inlined width, height, alignment or background into attributes, overwriting MJML's own:
    # a logo's width="160" would become width="100%", which Outlook takes as the image's size
    "disable_basic_attributes": ["width", "height", "align", "valign", "bgcolor"],
    "cssutils_logging_level": logging.CRITICAL,
}


@dataclass(frozen=True)
class RenderedIssue:
    slug: str
    email_html: str
    web_html: str
    text: str
    images: tuple[PreparedImage, ...] = ()
    """The issue's local images, prepared: written to images/ beside web.html, or embedded (images = "embed")."""


def _mjml_to_html(source: str) -> str:
    try:
        html: str = mjml.mjml2html(source, fonts={}, disable_comments=True)
    except Exception as error:  # mjml-python raises a bare Exception subclass from Rust
        raise RenderError(f"MJML: {error}") from None
    return html


def _finish_mjml(html: str) -> str:
    """Hide the preheader without a text colour (display:none, and mso-hide:all for Outlook); merge adjacent Outlook blocks.

    mjml-python leaves `<![endif]--><!--[if mso | IE]>` seams that stock MJML removes (1.4-1.9 KB an issue).
    """
    merged = _OUTLOOK_SEAM.sub(lambda seam: "".join(_SECTION_MARKER.findall(seam[1])), html)
    return merged.replace(_MJML_PREVIEW, _PREHEADER, 1)


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


def _greetings(issue: Issue, settings: Settings) -> list[GreetingLine]:
    try:
        return greeting_lines(issue.greeting, settings.default_greeting)
    except ValueError as error:  # an Issue validated by its model cannot get here
        raise RenderError(f"greeting: {error}") from None


def _check_greeting_written(output: str, greetings: list[GreetingLine], templates_dir: Path, template: str) -> None:
    """Templates copied before placeholders had fallbacks would send `{name|colleague}` as written: refuse them."""
    for line in greetings:
        marker = line.when or ("{{name|" if "{{name|" in line.text else "")
        if marker and marker not in output:
            raise RenderError(
                f"{templates_dir}: {template} does not write the greeting from `greetings`, so readers would see "
                f"its placeholders as written; write it as templates/email/sections/header.mjml and issue.txt do"
            )


def email_context(issue: Issue, slug: str, settings: Settings) -> dict[str, object]:
    """What the email templates are rendered with, besides `web`, `recipient` and `image_base`."""
    return {
        "issue": issue,
        "branding": settings.branding,
        "web_url": settings.web_url(slug),
        "archive_url": settings.archive_url,
        "greetings": _greetings(issue, settings),
        "images": {
            **{src: prepared(file) for src, file in local_images(issue)},
            **_branding_images(settings),
        },
    }


def _branding_images(settings: Settings) -> dict[str, PreparedImage]:
    images = {}
    for src, file, width, setting in branding_images(settings.branding):
        try:
            images[src] = prepared(file, width)
        except ImageProblem as problem:
            raise RenderError(f"{setting}: {problem}") from None
    return images


def email_image_base(slug: str, settings: Settings) -> str:
    """Where the email finds its local images: published with the web version, or inline parts (`cid:`)."""
    return "cid:" if settings.images == "embed" else f"{settings.web_url(slug)}{IMAGES_FOLDER}/"


def _image_heights(html: str, images: dict[str, PreparedImage], base: str) -> str:
    """Give each local image its height attribute (MJML writes height="auto"); the CSS height stays auto."""
    for image in images.values():
        src = re.escape(f'src="{base}{image.name}"')
        html = re.sub(rf'(<img\b[^>]*?)height="auto"([^>]*?{src})', rf'\g<1>height="{image.height}"\g<2>', html)
    return html


def render_issue(issue: Issue, slug: str, settings: Settings) -> RenderedIssue:
    """Render every output in memory; nothing touches the disk here."""
    templates_dir = settings.templates_dir or default_templates_dir()
    env = environment(Path(templates_dir))
    css_file = Path(templates_dir) / "inline.css"
    try:
        css = css_file.read_text(encoding="utf-8")
    except OSError as error:
        raise RenderError(f"{css_file}: cannot read: {error.strerror}") from None
    context = email_context(issue, slug, settings)
    greetings = cast(list[GreetingLine], context["greetings"])
    images = cast(dict[str, PreparedImage], context["images"])
    email_base, web_base = email_image_base(slug, settings), f"{IMAGES_FOLDER}/"
    email_mjml = render_template(env, "issue.mjml", web=False, recipient=PLACEHOLDERS, image_base=email_base, **context)
    web_mjml = render_template(
        env, "issue.mjml", web=True, recipient=None, image_base=web_base, **{**context, "greetings": []}
    )
    email_html = _image_heights(inline_css(_finish_mjml(_mjml_to_html(email_mjml)), css), images, email_base)
    text = render_text(env, recipient=PLACEHOLDERS, **context)
    _check_greeting_written(email_html, greetings, Path(templates_dir), "issue.mjml")
    _check_greeting_written(text, greetings, Path(templates_dir), "issue.txt")
    return RenderedIssue(
        slug=slug,
        email_html=email_html,
        web_html=_image_heights(
            inline_css(_finish_mjml(_mjml_to_html(web_mjml)).replace(_EMAIL_ROLE, _WEB_ROLE, 1), css), images, web_base
        ),
        text=text,
        images=tuple({image.name: image for image in images.values()}.values()),
    )
