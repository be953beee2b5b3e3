"""Headless Debian Chromium driven by Playwright, cut off from every network but 127.0.0.1 and files."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from tests.conftest import missing_service

if TYPE_CHECKING:
    from playwright.sync_api import Browser, FloatRect, Locator, Route

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium() -> Iterator[Browser]:
    try:
        import playwright.sync_api as playwright_api
    except ImportError as error:
        missing_service(f"Playwright is not installed ({error}); install the test extras: pip install -e '.[test]'")
    if not shutil.which("chromium"):
        missing_service("Debian chromium is not installed (apt-get install chromium; .ci/run installs it)")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def box_of(element: Locator) -> FloatRect:
    """Where the element is drawn; it must be visible."""
    box = element.bounding_box()
    assert box is not None, f"{element} is not visible"
    return box


def local_only(route: Route) -> None:
    """Let file:// and loopback through; abort anything else (remote images in the email)."""
    if route.request.url.startswith(("file:", "http://127.0.0.1", "data:")):
        route.continue_()
    else:
        route.abort()
