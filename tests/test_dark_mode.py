"""Dark mode in real Chromium: `prefers-color-scheme: dark` and Outlook.com's `[data-ogsc]`/`[data-ogsb]` hooks.

Each seed is rendered with `mailer render` and opened from disk with every remote image blocked. In dark mode
every visible piece of text (links and blocked images' alt text too) must stand 4.5:1 against the background
it is drawn on, and Outlook.com's hooks must give the same colours as the media query.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser import chromium, local_only
from tests.cli_helpers import run_cli
from tests.conftest import ROOT
from tests.test_email_accessibility import BACKGROUND, contrast, luminance, words

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

OUTPUT = ROOT / "test-output"
SLUGS = ["2016-02", "2015-10"]
KINDS = ["email", "web"]

# Every visible element with text of its own (or a blocked image's alt text): its text, computed colour and
# the first non-transparent background behind it, walking up its ancestors (white if there is none).
TEXT_COLOURS = (
    """() => {
    const visible = e => e.getClientRects().length > 0 && getComputedStyle(e).visibility !== 'hidden'
        && ![...function* () { for (let a = e; a; a = a.parentElement) yield a; }()]
            .some(a => parseFloat(getComputedStyle(a).opacity) === 0);
    """
    + BACKGROUND
    + """
    return [...document.body.querySelectorAll('*')]
        .filter(e => e.tagName === 'IMG'
            ? !(e.complete && e.naturalWidth > 0) && e.alt.trim()
            : [...e.childNodes].some(n => n.nodeType === Node.TEXT_NODE && n.textContent.trim()))
        .filter(visible)
        .map(e => ({tag: e.tagName, text: e.tagName === 'IMG' ? e.alt
                        : [...e.childNodes].filter(n => n.nodeType === Node.TEXT_NODE).map(n => n.textContent).join(''),
                    colour: getComputedStyle(e).color, background: background(e)}));
}"""
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def rendered_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`mailer render` output of each seed, as a user gets it."""
    folders = {}
    for slug in SLUGS:
        folder = tmp_path_factory.mktemp(slug)
        result = run_cli("render", f"issues/{slug}.yaml", "-o", str(folder), cwd=ROOT)
        assert result.exit_code == 0, result.output
        folders[slug] = folder
    return folders


def open_page(browser: Browser, path: Path, *, scheme: str, width: int = 800) -> Page:
    page = browser.new_page(viewport={"width": width, "height": 800})
    page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
    page.route("**/*", local_only)
    page.goto(path.as_uri())
    return page


def text_colours(page: Page) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = page.evaluate(TEXT_COLOURS)
    return [{**item, "text": words(item["text"])} for item in found]


def low_contrast(found: list[dict[str, Any]]) -> list[tuple[str, str, str, str, float]]:
    return [
        (item["tag"], item["text"][:40], item["colour"], item["background"], round(ratio, 2))
        for item in found
        if (ratio := contrast(item["colour"], item["background"])) < 4.5
    ]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("slug", SLUGS)
def test_dark_mode_changes_the_page_and_every_text_stands_4_5_to_1(
    browser: Browser, rendered_files: dict[str, Path], slug: str, kind: str
) -> None:
    OUTPUT.mkdir(exist_ok=True)
    path = rendered_files[slug] / f"{kind}.html"
    light = open_page(browser, path, scheme="light").screenshot(full_page=True)
    for width in (375, 800):
        page = open_page(browser, path, scheme="dark", width=width)
        dark = page.screenshot(path=str(OUTPUT / f"dark-{kind}-{slug}-{width}.png"), full_page=True)
        if width == 800:
            assert dark != light, "dark mode looks the same as light mode"
        found = text_colours(page)
        assert len(found) > 20
        assert any(item["tag"] == "A" for item in found)
        dark_on_light = [
            item["text"][:40] for item in found if luminance(item["colour"]) < luminance(item["background"])
        ]
        assert dark_on_light == [], "in dark mode, text is light on a darker background"
        assert low_contrast(found) == [], "text in dark mode needs 4.5:1 against its background"
        page.close()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("slug", SLUGS)
def test_outlook_com_hooks_give_the_dark_mode_colours(
    browser: Browser, rendered_files: dict[str, Path], slug: str, kind: str
) -> None:
    """Outlook.com marks the elements it recolours with data-ogsc (text) and data-ogsb (background)."""
    path = rendered_files[slug] / f"{kind}.html"
    dark = text_colours(open_page(browser, path, scheme="dark"))
    page = open_page(browser, path, scheme="light")
    page.evaluate(
        "document.documentElement.setAttribute('data-ogsc', ''); document.documentElement.setAttribute('data-ogsb', '')"
    )
    outlook = text_colours(page)
    assert low_contrast(outlook) == []
    assert outlook == dark
