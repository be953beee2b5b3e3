"""Outlook on Windows renders with Word: it reads `<!--[if mso]>` blocks, skips `<!--[if !mso]><!-->` ones and
ignores padding on links, so a padded link is clickable only on its text. Buttons there are VML round rectangles.

`outlook_view` turns the email into the markup Word gets; Chromium shows what every other client does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from lxml import html as lxml_html

from mailer.compose.model import Issue
from mailer.compose.render import RenderedIssue
from mailer.settings import Settings
from tests.browser import chromium, local_only
from tests.conftest import render_slug

if TYPE_CHECKING:
    from playwright.sync_api import Browser

SLUGS = ["2016-02", "2015-10"]
NOT_MSO = re.compile(r"<!--\[if !mso\]><!-->.*?<!--<!\[endif\]-->", re.DOTALL)
MSO = re.compile(r"<!--\[if mso(?: \| IE)?\]>(.*?)<!\[endif\]-->", re.DOTALL)


def outlook_view(html: str) -> str:
    """What Outlook's Word engine parses: `[if mso]` blocks opened, `[if !mso]` blocks gone."""
    return MSO.sub(lambda block: block[1], NOT_MSO.sub("", html))


def vml_buttons(html: str) -> list[dict[str, Any]]:
    """Each VML round rectangle: its link, label, width and the width of the Outlook table cell holding it."""
    document = lxml_html.fromstring(outlook_view(html))
    buttons = []
    for shape in document.iter("v:roundrect"):
        style = dict(part.split(":", 1) for part in shape.get("style", "").strip(";").split(";"))
        cell = next(parent for parent in shape.iterancestors("td") if "width:" in parent.get("style", ""))
        cell_width = re.search(r"width:(\d+)px", cell.get("style", ""))
        assert cell_width, "Outlook columns have a width in pixels"
        buttons.append(
            {
                "href": shape.get("href"),
                "label": " ".join(shape.text_content().split()),
                "width": int(style["width"].removesuffix("px")),
                "height": int(style["height"].removesuffix("px")),
                "cell": int(cell_width[1]),
                "fill": shape.get("fillcolor"),
            }
        )
    return buttons


@pytest.mark.parametrize("slug", SLUGS)
def test_outlook_gets_a_vml_button_for_every_section_link_and_no_padded_link(
    slug: str, seed_issues: dict[str, Issue], rendered: dict[str, RenderedIssue]
) -> None:
    issue = seed_issues[slug]
    assert issue.section_links, "the seeds have section links"
    for html in (rendered[slug].email_html, rendered[slug].web_html):
        buttons = vml_buttons(html)
        assert [(button["href"], button["label"]) for button in buttons] == [
            (link.url, link.label) for link in issue.section_links
        ]
        for button in buttons:
            assert button["width"] == button["cell"] - 48, "the button fills its column, less the text padding"
            assert button["height"] >= 40
            assert button["fill"] == "#0b5394"
        assert 'class="button"' not in outlook_view(html), "Outlook would show the padded link as well"


def test_a_long_label_makes_the_outlook_button_taller_not_clipped(
    write_issue: Callable[..., Path], settings: Settings
) -> None:
    labels = ["Vacancies", "A very long label for a button that cannot fit on one line of its column"]
    links = "".join(f"  - {{label: {label}, url: 'https://www.icmpd.org/{n}/'}}\n" for n, label in enumerate(labels))
    path = write_issue(f"title: T\ndate: 2016-02-10\npreheader: P\nsection_links:\n{links}")
    heights = {button["label"]: button["height"] for button in vml_buttons(render_slug(path, settings).email_html)}
    assert heights[labels[1]] > heights[labels[0]]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.mark.parametrize("width", [375, 800])
@pytest.mark.parametrize("slug", SLUGS)
def test_everywhere_else_the_whole_coloured_button_is_the_link(
    browser: Browser, rendered: dict[str, RenderedIssue], tmp_path: Path, slug: str, width: int
) -> None:
    path = tmp_path / "email.html"
    path.write_text(rendered[slug].email_html, encoding="utf-8")
    page = browser.new_page(viewport={"width": width, "height": 800})
    page.route("**/*", local_only)
    page.goto(path.as_uri())
    misses: list[Any] = page.evaluate(
        """() => [...document.querySelectorAll('a.button')].flatMap(a => {
            a.scrollIntoView();
            // the outermost box painted in the button's colour is what a reader sees as the button
            let painted = a;
            const colour = getComputedStyle(a).backgroundColor;
            for (let e = a.parentElement; e && getComputedStyle(e).backgroundColor === colour; e = e.parentElement) painted = e;
            const r = painted.getBoundingClientRect();
            const corners = [[r.left + 2, r.top + 2], [r.right - 2, r.top + 2], [r.left + 2, r.bottom - 2], [r.right - 2, r.bottom - 2]];
            return corners.filter(([x, y]) => document.elementFromPoint(x, y)?.closest('a') !== a)
                .map(corner => [a.textContent, corner]);
        })"""
    )
    buttons = page.locator("a.button").count()
    page.close()
    assert buttons == 2
    assert misses == [], "every corner of a button is its link"


LABELS = [
    "Vacancies",
    "CURRENT VACANCIES AT ICMPD HEADQUARTERS WWWW",
    "MMMMMMMMMM MMMMMMMMMM MMMMMMMMMM MMMMMMMM",
    "A label long enough to need three lines here",
    "Migrationspartnerschaftsvereinbarungsentwurf",
]


@pytest.mark.parametrize("count", [2, 3, 5])
def test_each_outlook_button_is_tall_enough_for_its_label_as_a_browser_wraps_it(
    browser: Browser, write_issue: Callable[..., Path], settings: Settings, count: int
) -> None:
    """Word draws VML text with an inset of about 10 px a side, in the button's font; the shape does not grow."""
    links = "".join(
        f"  - {{label: {label}, url: 'https://www.icmpd.org/{n}/'}}\n" for n, label in enumerate(LABELS[:count])
    )
    path = write_issue(f"title: T\ndate: 2016-02-10\npreheader: P\nsection_links:\n{links}")
    page = browser.new_page()
    for button in vml_buttons(render_slug(path, settings).email_html):
        lines = page.evaluate(
            """([label, width]) => {
                const box = document.createElement('div');
                box.style.cssText = `width:${width}px;font:bold 15px Arial, Helvetica, sans-serif;line-height:20px`;
                box.textContent = label;
                document.body.append(box);
                return Math.round(box.getBoundingClientRect().height / 20);
            }""",
            [button["label"], button["width"] - 20],
        )
        assert button["height"] >= lines * 20 + 20, f"{button['label']!r} needs {lines} lines"
    page.close()
