"""`mailer preview` in real headless Chromium: layout, live reload, errors over the last good render."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.browser import chromium
from tests.conftest import MINIMAL, ROOT, read_line
from tests.smtp_server import free_port

if TYPE_CHECKING:
    from playwright.sync_api import Browser, FrameLocator, Page

OUTPUT = ROOT / "test-output"


class PreviewServer:
    def __init__(self, workdir: Path, *files: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mailer", "preview", *files, "--no-open", "--port", str(self.port)],
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        line = read_line(self.process, timeout=30, what="mailer preview's first line")
        assert line.startswith("previewing at http://127.0.0.1:"), line

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


@pytest.fixture
def server(workdir: Path) -> Iterator[PreviewServer]:
    """A preview of its own, for a test that edits the issue files."""
    preview = PreviewServer(workdir)
    yield preview
    preview.stop()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PreviewServer]:
    """One preview for the tests that only look: starting one costs a second."""
    workdir = tmp_path_factory.mktemp("preview")
    shutil.copy(ROOT / "mailer.toml", workdir / "mailer.toml")
    shutil.copytree(ROOT / "issues", workdir / "issues")
    preview = PreviewServer(workdir)
    yield preview
    preview.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


def frame_of(page: Page) -> FrameLocator:
    return page.frame_locator("#frame")


@pytest.mark.parametrize("slug", ["2016-02", "2015-10"])
def test_preview_shows_the_email_on_desktop_and_phone(
    browser: Browser, shared_server: PreviewServer, slug: str
) -> None:
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(f"{shared_server.url}/issue/{slug}/")
    assert (
        page.locator("#subject").inner_text()
        == f"{'February 2016' if slug == '2016-02' else 'October 2015'} Monthly Update"
    )
    assert page.locator("#size").inner_text() != "0"
    frame = frame_of(page)
    frame.locator("h1.issue-title").wait_for()
    email = page.frame(url=lambda url: "email.html" in url)
    assert email is not None
    widest = email.evaluate(
        "Math.max(...[...document.querySelectorAll('p, h1, h2, h3, table')].map(e => e.getBoundingClientRect().width))"
    )
    assert widest <= 600
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / f"preview-{slug}-desktop.png"))

    page.get_by_role("button", name="Mobile").click()
    page.wait_for_function("document.getElementById('frame').offsetWidth <= 380")
    frame.locator("h1.issue-title").wait_for()
    email = page.frame(url=lambda url: "email.html" in url)
    assert email is not None
    assert email.evaluate("document.documentElement.scrollWidth") <= 375
    assert email.evaluate(
        "[...document.images].every(img => img.alt.trim() || img.closest('a')?.textContent.trim())"
    ), "every image says what it shows, or is an icon beside its link's text"
    page.screenshot(path=str(OUTPUT / f"preview-{slug}-mobile.png"))

    page.get_by_role("button", name="Plain text").click()
    page.wait_for_function("document.getElementById('frame').src.includes('email.txt')")
    page.close()


def test_saving_the_yaml_updates_the_open_page(browser: Browser, server: PreviewServer, workdir: Path) -> None:
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(f"{server.url}/issue/2016-02/")
    frame_of(page).locator("h1.issue-title").wait_for()
    page.evaluate("window.notReloaded = true")
    issue = workdir / "issues" / "2016-02.yaml"
    issue.write_text(
        issue.read_text().replace("title: February 2016 Monthly Update", "title: February 2016 Special Edition")
    )
    frame_of(page).get_by_text("February 2016 Special Edition").first.wait_for(timeout=15_000)
    assert page.locator("#subject").inner_text() == "February 2016 Special Edition"
    assert page.evaluate("window.notReloaded") is True
    page.close()


def test_an_invalid_edit_shows_the_error_and_fixing_it_restores_the_preview(
    browser: Browser, server: PreviewServer, workdir: Path
) -> None:
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(f"{server.url}/issue/2016-02/")
    frame_of(page).locator("h1.issue-title").wait_for()
    issue = workdir / "issues" / "2016-02.yaml"
    good = issue.read_text()
    issue.write_text(good.replace("title: February 2016 Monthly Update", "titel: February 2016 Monthly Update"))
    errors = page.locator("#error-lines")
    errors.wait_for(state="visible", timeout=15_000)
    assert errors.inner_text().splitlines() == [
        "issues/2016-02.yaml:1:1: title: required field is missing",
        "issues/2016-02.yaml:2:1: titel: unknown field; did you mean 'title'?",
    ]
    frame_of(page).locator("h1.issue-title").wait_for()  # the last good render stays
    issue.write_text(good)
    errors.wait_for(state="hidden", timeout=15_000)
    page.close()


def _outside_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # no packet is sent: this only picks the outgoing interface
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else str(address)


def test_a_draft_is_previewed_with_a_visible_draft_badge_that_follows_the_file(browser: Browser, workdir: Path) -> None:
    draft = workdir / "issues" / "2016-03.yaml"
    draft.write_text(MINIMAL + "status: draft\n", encoding="utf-8")
    preview = PreviewServer(workdir)
    try:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(preview.url)
        items = page.locator("li")
        assert items.nth(0).inner_text() == "2016-03 March 2016 Monthly Update 2016-03-10 DRAFT"
        assert items.nth(1).inner_text().startswith("2016-02 February 2016 Monthly Update")
        assert "DRAFT" not in items.nth(1).inner_text()

        page.goto(f"{preview.url}/issue/2016-03/")
        badge = page.locator("#badge")
        assert badge.is_visible() and badge.inner_text() == "DRAFT"
        draft.write_text(MINIMAL, encoding="utf-8")  # ready now: the badge goes without a reload
        badge.wait_for(state="hidden", timeout=15_000)

        page.goto(f"{preview.url}/issue/2016-02/")
        assert not page.locator("#badge").is_visible()
        page.close()
    finally:
        preview.stop()


def test_the_preview_greets_a_sample_subscriber_and_one_without_a_name(browser: Browser, workdir: Path) -> None:
    issue = workdir / "issues" / "2016-03.yaml"
    issue.write_text(MINIMAL + "greeting: Dear {name|colleague},\n", encoding="utf-8")
    preview = PreviewServer(workdir, "issues/2016-03.yaml")
    try:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(f"{preview.url}/issue/2016-03/")
        frame_of(page).get_by_text("Dear Ana Example,").wait_for()
        page.get_by_label("Recipient without a name").check()
        frame_of(page).get_by_text("Dear colleague,").wait_for()
        page.get_by_role("button", name="Plain text").click()
        frame_of(page).get_by_text("Dear colleague,").wait_for()
        assert "{{" not in frame_of(page).locator("body").inner_text()
        page.close()
    finally:
        preview.stop()


def test_only_loopback_can_connect(shared_server: PreviewServer) -> None:
    address = _outside_address()
    if address is None:
        pytest.skip("this machine has no address but loopback")
    with socket.socket() as client, pytest.raises(ConnectionRefusedError):
        client.settimeout(5)
        client.connect((address, shared_server.port))


def test_a_taken_port_is_one_clear_line(workdir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "mailer", "preview", "issues/2016-02.yaml", "--no-open", "--port", str(port)],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert (result.returncode, result.stderr) == (
        1,
        f"port {port} on 127.0.0.1 is already in use; choose another with --port\n",
    )


def test_ctrl_c_stops_cleanly(workdir: Path) -> None:
    preview = PreviewServer(workdir, "issues/2016-02.yaml")
    preview.process.send_signal(2)
    out, err = preview.process.communicate(timeout=20)
    assert preview.process.returncode == 0 and out == "preview stopped\n" and "Traceback" not in err
