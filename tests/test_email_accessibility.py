"""The rendered email and web version as a screen reader and a reader with images off meet them, in real Chromium.

Each seed is rendered with `mailer render` and opened from disk with every remote image blocked, as many
mail clients show a message until the reader allows images.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from mailer.compose.model import Issue
from mailer.settings import Settings
from tests.browser import chromium, local_only
from tests.cli_helpers import run_cli
from tests.conftest import ROOT

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

OUTPUT = ROOT / "test-output"
SLUGS = ["2016-02", "2015-10"]
KINDS = ["email", "web"]

Outline = list[tuple[str, list[str]]]
"""Each h2 with the h3s under it, in document order."""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def rendered_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`mailer render` output of each seed: build/<slug>/{email,web}.html as a user gets them."""
    folders = {}
    for slug in SLUGS:
        folder = tmp_path_factory.mktemp(slug)
        result = run_cli("render", f"issues/{slug}.yaml", "-o", str(folder), cwd=ROOT)
        assert result.exit_code == 0, result.output
        folders[slug] = folder
    return folders


def open_page(browser: Browser, path: Path, *, width: int = 800) -> Page:
    page = browser.new_page(viewport={"width": width, "height": 800}, color_scheme="light")
    page.route("**/*", local_only)
    page.goto(path.as_uri())
    return page


def words(text: str) -> str:
    return " ".join(text.split())


def rgb(colour: str) -> tuple[float, float, float, float]:
    """A computed colour, `rgb(r, g, b)` or `rgba(r, g, b, a)`."""
    parts = [float(part) for part in re.findall(r"[\d.]+", colour)]
    return parts[0], parts[1], parts[2], parts[3] if len(parts) > 3 else 1.0


def luminance(colour: str) -> float:
    def channel(value: float) -> float:
        value /= 255
        return value / 12.92 if value <= 0.03928 else ((value + 0.055) / 1.055) ** 2.4

    red, green, blue, _ = rgb(colour)
    return 0.2126 * channel(red) + 0.7152 * channel(green) + 0.0722 * channel(blue)


def contrast(first: str, second: str) -> float:
    """WCAG 2 contrast ratio of two opaque colours."""
    light, dark = sorted([luminance(first), luminance(second)], reverse=True)
    return (light + 0.05) / (dark + 0.05)


def expected_outline(issue: Issue, settings: Settings) -> Outline:
    """The headings the text part uses, one h2 per section and one h3 per story, in the order they appear."""
    outline: Outline = []
    if issue.spotlight:
        spotlight = issue.spotlight
        outline.append((spotlight.heading, [spotlight.headline, *(story.title for story in spotlight.stories)]))
    for section in (issue.news, issue.other_news):
        if section:
            outline.append((section.heading or "News", [story.title for story in section.stories]))
    if issue.publications:
        titles = [f"{item.kind}: {item.title}" if item.kind else item.title for item in issue.publications.items]
        outline.append((issue.publications.heading, titles))
    if issue.events:
        outline.append((issue.events.heading, []))
    if settings.branding.social:
        outline.append((settings.branding.links_heading, []))
    return [(words(h2), [words(h3) for h3 in h3s]) for h2, h3s in outline]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("slug", SLUGS)
def test_heading_outline_is_one_h1_an_h2_per_section_and_an_h3_per_story(
    browser: Browser,
    rendered_files: dict[str, Path],
    seed_issues: dict[str, Issue],
    settings: Settings,
    slug: str,
    kind: str,
) -> None:
    page = open_page(browser, rendered_files[slug] / f"{kind}.html")
    headings: list[list[str]] = page.evaluate(
        "[...document.querySelectorAll('h1, h2, h3, h4, h5, h6')].map(h => [h.tagName, h.textContent])"
    )
    issue = seed_issues[slug]
    h1s = [words(text) for tag, text in headings if tag == "H1"]
    assert h1s == [words(issue.title)]
    assert [tag for tag, _ in headings if tag not in ("H1", "H2", "H3")] == []
    assert headings[0][0] == "H1", "the issue title comes before every section"

    outline: Outline = []
    for tag, text in headings[1:]:
        if tag == "H2":
            outline.append((words(text), []))
        else:
            assert outline, f"{text!r} sits under no section heading"
            outline[-1][1].append(words(text))
    assert outline == expected_outline(issue, settings)
    if issue.spotlight:
        tag = page.evaluate(
            "headline => [...document.querySelectorAll('body *')].filter(e => e.textContent.trim() === headline)"
            ".map(e => e.closest('h1, h2, h3, h4, h5, h6')).find(h => h)?.tagName",
            issue.spotlight.headline,
        )
        assert tag == "H3", "the spotlight headline is a heading"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("slug", SLUGS)
def test_every_link_is_underlined_or_stands_out_and_says_where_it_goes(
    browser: Browser, rendered_files: dict[str, Path], slug: str, kind: str
) -> None:
    page = open_page(browser, rendered_files[slug] / f"{kind}.html")
    links: list[dict[str, Any]] = page.evaluate(
        """[...document.querySelectorAll('a')].map(a => {
            const style = getComputedStyle(a);
            return {text: a.textContent, href: a.getAttribute('href'), colour: style.color,
                    underlined: style.textDecorationLine.includes('underline'), image: !!a.querySelector('img')};
        })"""
    )
    # the body text colour: the colour most of the paragraph text is drawn in
    paragraphs: list[list[Any]] = page.evaluate(
        "[...document.querySelectorAll('p')].map(p => [getComputedStyle(p).color, p.textContent.length])"
    )
    weights: dict[str, int] = {}
    for colour, length in paragraphs:
        weights[colour] = weights.get(colour, 0) + length
    body_text = max(weights, key=lambda colour: weights[colour])
    assert contrast(body_text, "rgb(255, 255, 255)") >= 4.5

    assert len(links) > 10
    indistinct = [
        (words(link["text"]), link["colour"])
        for link in links
        if not link["underlined"] and contrast(link["colour"], body_text) < 3
    ]
    assert indistinct == [], f"links neither underlined nor 3:1 against the body text {body_text}"
    assert [link for link in links if not words(link["text"]) and not link["image"]] == []
    assert [words(link["text"]) for link in links if "click here" in link["text"].lower()] == []
    if kind == "email":
        web_links = [link["href"] for link in links if words(link["text"]) == "View this email in your browser"]
        assert web_links == [f"https://newsletter.icmpd.org/{slug}/"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("slug", SLUGS)
def test_with_images_blocked_every_alt_text_is_readable(
    browser: Browser, rendered_files: dict[str, Path], slug: str, kind: str
) -> None:
    """An image either says what it shows in alt text that is sized and stands out from its background, or is
    decorative (alt="") inside a link whose own text says where it goes, like the social icons beside their label."""
    OUTPUT.mkdir(exist_ok=True)
    for width in (375, 800):
        page = open_page(browser, rendered_files[slug] / f"{kind}.html", width=width)
        images: list[dict[str, Any]] = page.evaluate(
            """[...document.querySelectorAll('img')].map(img => {
                let background = 'rgb(255, 255, 255)';
                for (let e = img.parentElement; e; e = e.parentElement) {
                    const colour = getComputedStyle(e).backgroundColor;
                    if (!/^rgba\\(.*, 0\\)$/.test(colour) && colour !== 'transparent') { background = colour; break; }
                }
                const style = getComputedStyle(img);
                const link = img.closest('a');
                return {alt: img.alt, loaded: img.complete && img.naturalWidth > 0, colour: style.color,
                        background, size: parseFloat(style.fontSize), width: img.getBoundingClientRect().width,
                        linkText: link ? link.textContent.trim() : ''};
            })"""
        )
        page.screenshot(path=str(OUTPUT / f"a11y-{kind}-{slug}-{width}-images-off.png"), full_page=True)
        assert images, "the seeds have a logo and social icons"
        assert [image["alt"] for image in images if image["loaded"]] == [], "remote images are blocked"
        described = [image for image in images if image["alt"].strip()]
        assert described, "the logo says what it is"
        unreadable = [
            (image["alt"], image["colour"], image["background"], image["size"])
            for image in described
            if contrast(image["colour"], image["background"]) < 4.5 or image["size"] < 13
        ]
        assert unreadable == [], "alt text needs 4.5:1 against its background and at least 13px"
        cramped = [(image["alt"], image["width"]) for image in described if image["width"] < 8 * len(image["alt"])]
        assert cramped == [], "alt text needs room to be read in its image's box"
        unexplained = [image for image in images if not image["alt"].strip() and not image["linkText"]]
        assert unexplained == [], "a decorative image sits in a link that says where it goes"


BACKGROUND = """const background = e => {
        for (let a = e; a; a = a.parentElement) {
            const colour = getComputedStyle(a).backgroundColor;
            if (colour !== 'transparent' && !/^rgba\\(.*, 0\\)$/.test(colour)) return colour;
        }
        return 'rgb(255, 255, 255)';
    };"""
"""JavaScript: the first non-transparent background behind an element, walking up its ancestors (white if none)."""

# Every visible element with text of its own: the text, its computed colour and font size, the background
# behind it, and whether it is a body paragraph (a <p> without a class).
TEXT_STYLES = (
    """() => {
    """
    + BACKGROUND
    + """
    return [...document.body.querySelectorAll('*')]
        .filter(e => [...e.childNodes].some(n => n.nodeType === Node.TEXT_NODE && n.textContent.trim()))
        .filter(e => e.getClientRects().length > 0 && getComputedStyle(e).opacity !== '0')
        .map(e => ({tag: e.tagName, text: e.textContent.trim().slice(0, 40), colour: getComputedStyle(e).color,
                    background: background(e), size: parseFloat(getComputedStyle(e).fontSize),
                    paragraph: e.tagName === 'P' && !e.className}));
}"""
)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("slug", SLUGS)
def test_on_a_phone_body_text_is_16px_nothing_is_under_13px_and_every_text_stands_4_5_to_1(
    browser: Browser, rendered_files: dict[str, Path], slug: str, kind: str
) -> None:
    OUTPUT.mkdir(exist_ok=True)
    open_page(browser, rendered_files[slug] / f"{kind}.html", width=800).screenshot(
        path=str(OUTPUT / f"light-{kind}-{slug}-800.png"), full_page=True
    )
    page = open_page(browser, rendered_files[slug] / f"{kind}.html", width=375)
    page.screenshot(path=str(OUTPUT / f"light-{kind}-{slug}-375.png"), full_page=True)
    texts: list[dict[str, Any]] = page.evaluate(TEXT_STYLES)
    body = [item for item in texts if item["paragraph"]]
    assert len(body) >= 5
    assert [(item["text"], item["size"]) for item in body if item["size"] < 16] == [], "body text is 16px or more"
    assert [(item["tag"], item["text"], item["size"]) for item in texts if item["size"] < 13] == []
    faint = [
        (
            item["tag"],
            item["text"],
            item["colour"],
            item["background"],
            round(contrast(item["colour"], item["background"]), 2),
        )
        for item in texts
        if contrast(item["colour"], item["background"]) < 4.5
    ]
    assert faint == [], "every text stands 4.5:1 against what it is drawn on"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("slug", SLUGS)
def test_on_a_phone_every_link_is_a_24px_target_and_link_rows_wrap_between_links(
    browser: Browser, rendered_files: dict[str, Path], slug: str, kind: str
) -> None:
    """WCAG 2.2 target size (2.5.8): 24 by 24 px, except a link inside a sentence, which the line height bounds."""
    page = open_page(browser, rendered_files[slug] / f"{kind}.html", width=375)
    assert_targets_and_rows(page, at_least=15)


def assert_targets_and_rows(page: Page, *, at_least: int) -> None:
    links: list[dict[str, Any]] = page.evaluate(
        """[...document.querySelectorAll('a')].map(a => {
            const block = a.closest('p, h1, h2, h3, td');
            const rest = block ? block.textContent.replace(a.textContent, '').replace(/[|\\s]/g, '') : '';
            const inRow = !!a.closest('p.link-row, p.social, p.footer');
            return {text: a.textContent.trim(), inSentence: !!a.closest('p:not([class])') && rest.length > 0 && !inRow,
                    inRow, boxes: [...a.getClientRects()].filter(r => r.width > 0).map(r => [r.width, r.height]),
                    rowWidth: block ? block.getBoundingClientRect().width : 0,
                    width: a.getBoundingClientRect().width};
        })"""
    )
    targets = [link for link in links if not link["inSentence"]]
    assert len(targets) >= at_least
    small = [
        (link["text"][:30], [[round(side) for side in box] for box in link["boxes"]])
        for link in targets
        if any(height < 24 or width < 24 for width, height in link["boxes"])
    ]
    assert small == [], "links outside sentences are at least 24 by 24 px"
    split = [
        link["text"] for link in links if link["inRow"] and len(link["boxes"]) > 1 and link["width"] < link["rowWidth"]
    ]
    assert split == [], "a row of links breaks between links, never inside one that fits on a line"
    rows = [link for link in links if link["inRow"]]
    assert rows
    lonely: list[str] = page.evaluate(
        """[...document.querySelectorAll('span.sep')].filter(sep => {
            const boxes = sep.parentElement.querySelector('a').getClientRects();
            const link = boxes[boxes.length - 1], mark = sep.getClientRects()[0];
            return mark.top < link.top - 1 || mark.bottom > link.bottom + 1;
        }).map(sep => sep.parentElement.textContent)"""
    )
    assert lonely == [], "a separator stays on the line of the link before it"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("slug", SLUGS)
def test_axe_finds_nothing_serious_and_the_web_version_nothing_at_all(
    browser: Browser, rendered_files: dict[str, Path], slug: str, kind: str
) -> None:
    """axe-core (shipped by axe-playwright-python). The email is an article inside the mail client's own page,
    which has the main landmark, so axe's two landmark rules (moderate) are the only ones it may raise."""
    from axe_playwright_python.sync_playwright import Axe

    page = open_page(browser, rendered_files[slug] / f"{kind}.html", width=375)
    violations: list[dict[str, Any]] = Axe().run(page).response["violations"]
    found = {violation["id"]: violation["impact"] for violation in violations}
    assert {rule: impact for rule, impact in found.items() if impact in ("serious", "critical")} == {}
    if kind == "web":
        assert found == {}
    else:
        assert set(found) <= {"landmark-one-main", "region"}


AWKWARD_ISSUE = """\
title: Ausschreibungen und Veröffentlichungen
date: 2016-03-10
preheader: Short labels, event links and many buttons
news:
  stories:
    - title: Downloads in three languages
      paragraphs: [Read it in the language you prefer.]
      links:
        - {label: EN, url: 'https://www.icmpd.org/en/'}
        - {label: FR, url: 'https://www.icmpd.org/fr/'}
        - {label: DE, url: 'https://www.icmpd.org/de/'}
        - {label: Migrationspartnerschaftsvereinbarungsentwurf, url: 'https://www.icmpd.org/long/'}
        - {label: The whole report with every annex and the statistical tables, url: 'https://www.icmpd.org/all/'}
section_links:
  - {label: Vacancies, url: 'https://www.icmpd.org/vacancies/'}
  - {label: Media, url: 'https://www.icmpd.org/media/'}
  - {label: A label long enough to need three lines here, url: 'https://www.icmpd.org/long/'}
  - {label: Blog, url: 'https://www.icmpd.org/blog/'}
  - {label: Contact, url: 'https://www.icmpd.org/contact/'}
events:
  items:
    - {date: 2016-03-15, title: Expert meeting, url: 'https://www.icmpd.org/ev/', place: Vienna}
"""


@pytest.mark.parametrize("width", [320, 375, 800])
def test_short_labels_event_links_and_five_buttons_keep_their_targets_and_words_whole(
    browser: Browser, tmp_path: Path, width: int
) -> None:
    (tmp_path / "issues").mkdir()
    (tmp_path / "issues" / "2016-03.yaml").write_text(AWKWARD_ISSUE, encoding="utf-8")
    shutil.copy(ROOT / "mailer.toml", tmp_path / "mailer.toml")
    result = run_cli("render", "issues/2016-03.yaml", "-o", "out", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    page = open_page(browser, tmp_path / "out" / "email.html", width=width)
    page.screenshot(path=str(OUTPUT / f"awkward-email-{width}.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert_targets_and_rows(page, at_least=10)
    broken: list[str] = page.evaluate(
        """[...document.querySelectorAll('a.button')].flatMap(a => a.textContent.split(' ').filter(word => {
            const range = document.createRange();
            const start = a.textContent.indexOf(word);
            range.setStart(a.firstChild, start);
            range.setEnd(a.firstChild, start + word.length);
            return range.getClientRects().length > 1;
        }))"""
    )
    assert broken == [], "no button breaks a word in two"
    rows: int = page.evaluate(
        "[...new Set([...document.querySelectorAll('a.button')].map(a => Math.round(a.getBoundingClientRect().top)))].length"
    )
    assert rows == (2 if width == 800 else 5), "five buttons sit in rows of at most three on desktop, stacked on phones"


def test_an_arabic_issue_reads_right_to_left(browser: Browser, tmp_path: Path) -> None:
    (tmp_path / "issues").mkdir()
    arabic = "title: النشرة الشهرية\ndate: 2016-03-10\nlanguage: ar\npreheader: أخبار الهجرة\nnews:\n  stories:\n" + (
        "    - {title: حوار حول الهجرة, paragraphs: [تعاون إقليمي بين الدول.]}\n"
    )
    (tmp_path / "issues" / "2016-03.yaml").write_text(arabic, encoding="utf-8")
    shutil.copy(ROOT / "mailer.toml", tmp_path / "mailer.toml")
    assert run_cli("render", "issues/2016-03.yaml", "-o", "out", cwd=tmp_path).exit_code == 0
    for kind in KINDS:
        page = open_page(browser, tmp_path / "out" / f"{kind}.html", width=375)
        assert page.evaluate("document.documentElement.dir") == "rtl"
        paragraph = page.locator("p", has_text="تعاون")
        assert paragraph.evaluate("p => [getComputedStyle(p).direction, getComputedStyle(p).textAlign]") == [
            "rtl",
            "right",
        ]
