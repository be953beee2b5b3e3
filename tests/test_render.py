"""What a reader's mail client gets: the properties of the real email, text and web outputs of both seeds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from lxml import html as lxml_html

from mailer.compose.build import GMAIL_CLIP_BYTES
from mailer.compose.model import Issue
from mailer.compose.render import PLACEHOLDERS, RenderedIssue
from mailer.settings import Settings
from tests.conftest import MINIMAL, render_slug

Seed = tuple[Issue, RenderedIssue]


def urls(html: str) -> list[str]:
    doc = lxml_html.fromstring(html)
    return [value for attr in ("href", "src") for value in doc.xpath(f"//@{attr}")]


def test_email_is_a_real_html_document_with_language(seed: Seed) -> None:
    issue, result = seed
    assert result.email_html.startswith("<!DOCTYPE html>")
    root = lxml_html.fromstring(result.email_html)
    assert root.get("lang") == issue.language == "en"
    assert root.findtext(".//title") == issue.email_subject


def test_email_is_600px_wide_and_one_column_under_480px(seed: Seed) -> None:
    _, result = seed
    widths = {int(w) for w in re.findall(r"max-width:(\d+)px", result.email_html)}
    assert max(widths) == 600
    assert "@media only screen and (min-width:480px)" in result.email_html
    # the events' two columns only apply above the breakpoint: below it every column is full width
    assert re.search(r"min-width:480px\) \{.*?\.mj-column-per-32 \{ width:32% !important", result.email_html)


def test_layout_tables_are_presentational_and_images_have_alt_or_sit_beside_text(seed: Seed) -> None:
    _, result = seed
    doc = lxml_html.fromstring(result.email_html)
    tables = doc.iter("table")
    assert all(table.get("role") == "presentation" for table in tables)
    images = list(doc.iter("img"))
    assert len(images) >= 5  # logo and social icons
    assert all(img.get("alt") is not None for img in images)
    decorative = [img for img in images if not img.get("alt")]
    assert all(img.getparent().tag == "a" and img.getparent().text_content().strip() for img in decorative), (
        "an image without alt text is an icon beside its link's own text"
    )


ACTIVE_ELEMENTS = ("script", "iframe", "object", "embed", "frame", "frameset", "applet", "base", "form")


def active_content(html: str) -> list[str]:
    """What a mail client would run or fetch on its own: scripts, frames, event handlers, javascript: URLs, external CSS."""
    doc = lxml_html.fromstring(html)
    found = [f"<{element.tag}>" for element in doc.iter(*ACTIVE_ELEMENTS)]
    for element in doc.iter():
        if not isinstance(element.tag, str):  # comments and processing instructions carry no attributes
            continue
        for name, value in element.attrib.items():
            if name.lower().startswith("on"):
                found.append(f"<{element.tag} {name}>")
            if value.strip().lower().startswith(("javascript:", "vbscript:")):
                found.append(f"<{element.tag} {name}={value!r}>")
    found += [f"<link rel={rel!r}>" for rel in doc.xpath("//link/@rel") if "stylesheet" in rel.lower().split()]
    found += [marker for marker in ("@import", "fonts.googleapis") if marker in html]
    return found


def test_no_script_external_css_or_font_import(seed: Seed) -> None:
    _, result = seed
    for html in (result.email_html, result.web_html):
        assert active_content(html) == []


@pytest.mark.parametrize(
    ("html", "reported"),
    [
        ('<html><body><p onclick="alert(1)">x</p></body></html>', "<p onclick>"),
        ("<html><body><img src=x.png alt=x ONERROR=alert(1)></body></html>", "<img onerror>"),
        ("<html><body><script>alert(1)</script></body></html>", "<script>"),
        ("<html><body><iframe src=https://evil.example/></iframe></body></html>", "<iframe>"),
        ('<html><body><a href=" JavaScript:alert(1)">x</a></body></html>', "<a href=' JavaScript:alert(1)'>"),
        ('<html><head><link rel="Stylesheet" href="https://x.example/a.css"></head></html>', "<link rel='Stylesheet'>"),
        ("<html><head><style>@import url(https://x.example/a.css);</style></head></html>", "@import"),
    ],
)
def test_the_active_content_check_reports_what_it_looks_for(html: str, reported: str) -> None:
    assert reported in active_content(html)
    assert active_content('<html><body><p class="onclick" title="on">onclick</p></body></html>') == []


def test_every_url_is_absolute_or_a_recipient_placeholder(seed: Seed) -> None:
    _, result = seed
    for url in urls(result.email_html):
        assert url in PLACEHOLDERS.values() or re.match(r"^(https://|mailto:)", url), url
    assert all(url.startswith("https://") for url in urls(result.web_html))


def test_styles_are_inlined_and_mjml_head_styles_kept(seed: Seed) -> None:
    _, result = seed
    doc = lxml_html.fromstring(result.email_html)
    head_css = " ".join(style.text or "" for style in doc.iter("style"))
    assert "section-heading" not in head_css  # our rules went into style attributes
    heading = doc.xpath("//h2[@class='section-heading']")[0]
    assert "text-transform:uppercase" in heading.get("style").replace(" ", "")
    assert "#outlook a" in head_css and "prefers-color-scheme: dark" in head_css
    assert "<!--[if mso | IE]>" in result.email_html
    # MJML's reset `p { margin: 13px 0 }` stays in the head, not in every paragraph
    assert "13px 0" not in " ".join(p.get("style", "") for p in doc.iter("p"))


def test_dark_mode_meta_and_hidden_preheader(seed: Seed) -> None:
    issue, result = seed
    doc = lxml_html.fromstring(result.email_html)
    assert doc.xpath("//meta[@name='color-scheme']/@content") == ["light dark"]
    hidden = doc.xpath("//body/div[1]")[0]
    assert "display:none" in hidden.get("style") and hidden.text_content() == issue.preheader


def test_web_version_link_and_footer_with_unsubscribe_placeholder(seed: Seed, settings: Settings) -> None:
    issue, result = seed
    doc = lxml_html.fromstring(result.email_html)
    web_link = doc.xpath("//a[normalize-space()='View this email in your browser']")[0]
    assert web_link.getparent().get("class") == "web-link"
    assert (
        web_link.get("href") == f"https://newsletter.icmpd.org/{'2016-02' if issue.date.year == 2016 else '2015-10'}/"
    )
    assert doc.xpath("//a[normalize-space()='Unsubscribe']/@href") == ["{{unsubscribe_url}}"]
    footer = " ".join(" ".join(doc.xpath("//p[@class='footer']")[0].itertext()).split())
    footer += " " + " ".join(" ".join(doc.xpath("//p[@class='footer']")[1].itertext()).split())
    assert "Gonzagagasse 1 1010 Vienna, Austria" in footer
    assert "This email was sent to {{email}}." in footer


def test_both_seeds_stay_under_gmail_clipping(rendered: dict[str, RenderedIssue]) -> None:
    sizes = {slug: len(result.email_html.encode()) for slug, result in rendered.items()}
    assert all(size < GMAIL_CLIP_BYTES for size in sizes.values()), sizes


def test_web_version_is_a_standalone_page_without_recipient_data(seed: Seed) -> None:
    issue, result = seed
    doc = lxml_html.fromstring(result.web_html)
    assert doc.findtext(".//title") == issue.email_subject
    assert doc.xpath("//meta[@name='description']/@content") == [issue.preheader]
    og = {m.get("property"): m.get("content") for m in doc.xpath("//meta[starts-with(@property, 'og:')]")}
    assert og["og:title"] == issue.email_subject and og["og:url"].startswith("https://newsletter.icmpd.org/")
    assert "{{" not in result.web_html
    assert "click here" not in result.web_html and "Unsubscribe" not in result.web_html


def test_text_alternative_wraps_at_78_and_keeps_every_link(seed: Seed, settings: Settings) -> None:
    issue, result = seed
    long_lines = [line for line in result.text.splitlines() if len(line) > 78]
    assert long_lines == []
    for url in set(lxml_html.fromstring(result.email_html).xpath("//a/@href")):
        assert url in result.text, url
    assert f"Unsubscribe: {PLACEHOLDERS['unsubscribe_url']}" in result.text
    assert result.text.startswith(f"{issue.title}\n{'=' * len(issue.title)}\n")


def test_yaml_content_is_escaped_and_markup_only_where_allowed(write_issue, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    text = MINIMAL.replace("A story", "'<script>alert(1)</script> & <b>bold</b>'").replace(
        "The first paragraph.",
        "'Some *emphasis*, <img src=x onerror=alert(1)> and [a link](https://example.org/a?b=1&c=2).'",
    )
    result = render_slug(write_issue(text), settings)
    doc = lxml_html.fromstring(result.email_html)
    assert not list(doc.iter("script")) and not doc.xpath("//img[@onerror]")
    assert "<script>alert(1)</script> & <b>bold</b>" in doc.text_content()
    assert doc.xpath("//em/text()") == ["emphasis"]
    assert doc.xpath("//a[text()='a link']/@href") == ["https://example.org/a?b=1&c=2"]
    assert "Some emphasis, <img src=x onerror=alert(1)> and a link <https://example.org/a?b=1&c=2>." in " ".join(
        result.text.split()
    )


def test_greeting_carries_a_name_placeholder(write_issue, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    result = render_slug(write_issue(MINIMAL + "greeting: Dear {name},\n"), settings)
    assert "Dear {{name}}," in result.email_html and "Dear {{name}}," in result.text
    assert "Dear" not in result.web_html


def test_custom_templates_dir_is_used(tmp_path: Path, write_issue, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    import shutil

    from mailer.compose.templates import default_templates_dir

    custom = tmp_path / "templates"
    shutil.copytree(default_templates_dir(), custom)
    footer = custom / "sections" / "footer.mjml"
    footer.write_text(footer.read_text().replace("This email was sent to", "Delivered to"))
    result = render_slug(write_issue(MINIMAL), settings.model_copy(update={"templates_dir": custom}))
    assert "Delivered to {{email}}" in result.email_html
