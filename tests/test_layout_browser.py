"""The rendered email as a person sees it in a real browser: one column on a phone, 600 px on a desktop."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from mailer.compose.render import RenderedIssue
from tests.browser import box_of, chromium, local_only

if TYPE_CHECKING:
    from playwright.sync_api import Browser

OUTPUT = Path(__file__).resolve().parents[1] / "test-output"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.mark.parametrize("slug", ["2016-02", "2015-10"])
def test_email_fits_a_phone_and_stays_600px_on_desktop(
    browser: Browser, slug: str, rendered: dict[str, RenderedIssue], tmp_path: Path
) -> None:
    page_file = tmp_path / "email.html"
    page_file.write_text(rendered[slug].email_html, encoding="utf-8")
    OUTPUT.mkdir(exist_ok=True)

    phone = browser.new_page(viewport={"width": 375, "height": 800})
    phone.route("**/*", local_only)
    phone.goto(page_file.as_uri())
    assert phone.evaluate("document.documentElement.scrollWidth") <= 375
    # under 480 px the events' date and details columns stack: both start at the same x
    date_box = box_of(phone.locator("p.event-date").first)
    event_box = box_of(phone.locator("p.event").first)
    assert date_box["x"] == event_box["x"] and event_box["y"] > date_box["y"]
    phone.screenshot(path=str(OUTPUT / f"email-{slug}-375.png"), full_page=True)

    desktop = browser.new_page(viewport={"width": 1000, "height": 800})
    desktop.route("**/*", local_only)
    desktop.goto(page_file.as_uri())
    widest = desktop.evaluate(
        "Math.max(...[...document.querySelectorAll('p, h1, h2, h3, table')].map(e => e.getBoundingClientRect().width))"
    )
    assert widest <= 600
    date_box = box_of(desktop.locator("p.event-date").first)
    event_box = box_of(desktop.locator("p.event").first)
    assert event_box["x"] > date_box["x"] and abs(event_box["y"] - date_box["y"]) < 5
    desktop.screenshot(path=str(OUTPUT / f"email-{slug}-1000.png"), full_page=True)
