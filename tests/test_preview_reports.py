"""The preview's Reports page in real headless Chromium, over a database the library filled by really sending."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa

from mailer.audience.database import deliveries, delivery_events, open_database, subscribers
from mailer.audience.lists import add_subscriber, create_list, list_id
from mailer.delivery.bounces import record_unsubscribe
from mailer.delivery.send import run, send_to_list
from mailer.settings import Settings
from tests.browser import chromium, local_only
from tests.conftest import ISSUES, ROOT, read_line
from tests.smtp_server import SMTPServer, free_port

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Dialog, Locator, Page

OUTPUT = ROOT / "test-output"
HOSTILE = "<script>alert(1)</script>"
LONG_DIAGNOSTIC = HOSTILE + " policy rejection; see https://postmaster.example.net/" + "x" * 400


class PreviewServer:
    """`mailer preview` as a person starts it, with the database named by MAILER_DATABASE_URL (or none)."""

    def __init__(self, workdir: Path, database_url: str | None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {key: value for key, value in os.environ.items() if key != "MAILER_DATABASE_URL"}
        if database_url is not None:
            env["MAILER_DATABASE_URL"] = database_url
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mailer", "preview", "--no-open", "--port", str(self.port)],
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**env, "PYTHONUNBUFFERED": "1"},
        )
        line = read_line(self.process, timeout=30, what="mailer preview's first line")
        assert line.startswith("previewing at http://127.0.0.1:"), line

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


def open_page(browser: Browser, url: str, dialogs: list[str]) -> Page:
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.route("**/*", local_only)

    def refuse(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", refuse)
    page.goto(url)
    return page


def add_event(conn: sa.Connection, address: str, issue: str, kind: str, status: str = "", diagnostic: str = "") -> None:
    row = conn.execute(sa.select(subscribers.c.id).where(subscribers.c.email == address)).one()
    conn.execute(
        sa.insert(delivery_events).values(
            subscriber_id=row.id,
            email=address,
            issue=issue,
            list_id=conn.execute(sa.select(deliveries.c.list_id).where(deliveries.c.email == address)).scalar(),
            kind=kind,
            status=status,
            diagnostic=diagnostic,
            source="<bounce@example.net>",
            created_at=dt.datetime.now(dt.UTC),
        )
    )


@pytest.fixture
def reported(send_settings: Settings, smtp_server: SMTPServer) -> str:
    """Two issues in the ledger: 2016-02 really sent today (two addresses refused, 5.1.1), 2015-10 written as in 2015."""
    engine = open_database(send_settings.database_url)
    try:
        create_list(engine, "staff", "All staff")
        for i in range(6):
            add_subscriber(engine, "staff", f"person{i}@example.org", name=f"Person {i}")
        add_subscriber(engine, "staff", "nouser0@example.org")
        add_subscriber(engine, "staff", "nouser1@example.org")
        with ThreadPoolExecutor(1) as thread:  # Playwright's sync API keeps an event loop running on this one
            sending = thread.submit(lambda: run(send_to_list(engine, send_settings, ISSUES / "2016-02.yaml", "staff")))
            summary = sending.result(timeout=60)
        assert (summary.sent, summary.failed_permanent) == (6, 2)
        with engine.begin() as conn:
            for address in ("person1@example.org", "person2@example.org"):
                add_event(conn, address, "2016-02", "soft", "4.2.2", "552 4.2.2 Mailbox full")
            add_event(conn, "person3@example.org", "2016-02", "complaint")
            add_event(conn, "person5@example.org", "2016-02", "hard", "5.7.1", LONG_DIAGNOSTIC)
        staff = list_id(engine, "staff")
        with engine.connect() as conn:
            person4 = conn.execute(sa.select(subscribers.c.id).where(subscribers.c.email == "person4@example.org"))
            unsubscriber = person4.scalar_one()
        record_unsubscribe(engine, unsubscriber, staff, "2016-02", "link in the issue")
        october = dt.datetime(2015, 10, 20, 9, 30, tzinfo=dt.UTC)
        with engine.begin() as conn:
            people = conn.execute(
                sa.select(subscribers.c.id, subscribers.c.email).where(subscribers.c.email.like("person%")).limit(4)
            ).all()
            conn.execute(
                sa.insert(deliveries),
                [
                    {"issue": "2015-10", "list_id": staff, "subscriber_id": person.id, "email": person.email}
                    | {"status": "sent", "attempts": 1, "updated_at": october, "sent_at": october}
                    for person in people
                ],
            )
            first, second = (person.email for person in people[:2])
            add_event(conn, first, "2015-10", "hard", "5.1.1", "550 5.1.1 mailbox unavailable")
            for _ in range(2):  # one person bounced twice: counted once
                add_event(conn, second, "2015-10", "soft", "4.4.1", "connection timed out")
    finally:
        engine.dispose()
    return send_settings.database_url


def cells(row: Locator) -> list[str]:
    return [cell.strip() for cell in row.locator("th, td").all_inner_texts()]


def bar_widths(section: Locator) -> dict[str, float]:
    widths = {}
    for row in section.locator("table.figures tbody tr").all():
        label = row.locator("th").inner_text().strip()
        svg = row.locator("svg")
        assert svg.get_attribute("aria-hidden") == "true", "the numbers beside the bar say it"
        widths[label] = float(svg.locator("rect.value").get_attribute("width") or "nan")
        assert float(svg.locator("rect.track").get_attribute("width") or "nan") == 240
    return widths


def test_the_reports_page_draws_every_sent_issue_newest_first(browser: Browser, workdir: Path, reported: str) -> None:
    preview = PreviewServer(workdir, reported)
    dialogs: list[str] = []
    try:
        page = open_page(browser, preview.url, dialogs)
        page.get_by_role("link", name="Reports").click()
        page.wait_for_url(f"{preview.url}/reports")
        sections = page.locator("section.issue")
        assert page.locator("section.issue h2").all_inner_texts() == ["2016-02", "2015-10"]

        february = sections.nth(0)
        assert february.locator(".when").inner_text().startswith(f"Last sent {dt.datetime.now(dt.UTC):%Y-%m-%d}")
        rows = february.locator("table.figures tbody tr")
        assert [cells(row) for row in rows.all()] == [
            ["Sent", "6", "", ""],
            ["Bounced (hard)", "3", "37.5%", ""],
            ["Bounced (soft)", "2", "25.0%", ""],
            ["Complaints", "1", "12.50%", ""],
            ["Unsubscribes", "1", "12.5%", ""],
        ]
        assert february.locator(".others").inner_text() == "Also: 2 failed."
        assert bar_widths(february) == {
            "Sent": 240,
            "Bounced (hard)": 120,
            "Bounced (soft)": 80,
            "Complaints": 40,
            "Unsubscribes": 40,
        }
        reasons = [cells(row) for row in february.locator("table.reasons tbody tr").all()]
        assert [reason[:2] for reason in reasons] == [["4.2.2", "2"], ["5.1.1", "2"], ["5.7.1", "1"]]
        assert reasons[0][2] == "552 4.2.2 Mailbox full"
        assert reasons[1][2].endswith("Recipient address rejected: User unknown"), reasons[1]
        hostile = february.locator("table.reasons tbody tr").nth(2).locator("td.example")
        shown = hostile.inner_text()
        assert shown.startswith(HOSTILE + " policy rejection") and shown.endswith("\u2026") and len(shown) <= 160
        assert hostile.get_attribute("title") == LONG_DIAGNOSTIC, "the whole text is a hover away"
        assert page.evaluate("document.scripts.length") == 0 and dialogs == []

        october = sections.nth(1)
        assert october.locator(".when").inner_text() == "Last sent 2015-10-20 09:30 UTC"
        assert [cells(row)[:3] for row in october.locator("table.figures tbody tr").all()] == [
            ["Sent", "4", ""],
            ["Bounced (hard)", "1", "25.0%"],
            ["Bounced (soft)", "1", "25.0%"],
            ["Complaints", "0", "0.00%"],
            ["Unsubscribes", "0", "0.0%"],
        ]
        assert bar_widths(october) == {
            "Sent": 240,
            "Bounced (hard)": 60,
            "Bounced (soft)": 60,
            "Complaints": 0,
            "Unsubscribes": 0,
        }
        assert [cells(row) for row in october.locator("table.reasons tbody tr").all()] == [
            ["4.4.1", "1", "connection timed out"],
            ["5.1.1", "1", "550 5.1.1 mailbox unavailable"],
        ]
        OUTPUT.mkdir(exist_ok=True)
        page.screenshot(path=str(OUTPUT / "preview-reports.png"), full_page=True)

        february.get_by_role("link", name="2016-02").click()
        page.wait_for_url(f"{preview.url}/issue/2016-02/")
        page.close()
    finally:
        preview.stop()


def test_an_empty_database_says_so_in_one_line(browser: Browser, workdir: Path, database_url: str) -> None:
    open_database(database_url).dispose()
    preview = PreviewServer(workdir, database_url)
    try:
        page = open_page(browser, f"{preview.url}/reports", [])
        assert page.locator("h1 ~ *").all_inner_texts() == ["No issue has been sent yet."]
        OUTPUT.mkdir(exist_ok=True)
        page.screenshot(path=str(OUTPUT / "preview-reports-empty.png"))
        page.close()
    finally:
        preview.stop()


def test_without_a_database_the_preview_works_and_reports_create_none(browser: Browser, workdir: Path) -> None:
    preview = PreviewServer(workdir, None)  # mailer.toml's default: a SQLite file not made yet
    try:
        page = open_page(browser, f"{preview.url}/issue/2016-02/", [])
        page.frame_locator("#frame").locator("h1.issue-title").wait_for()
        page.get_by_role("link", name="Reports").click()
        page.wait_for_url(f"{preview.url}/reports")
        assert page.locator("h1 ~ *").all_inner_texts() == ["No issue has been sent yet."]
        assert not list(workdir.glob("**/*.sqlite3*")), "looking at reports creates no database"
        page.close()
    finally:
        preview.stop()


def test_a_database_error_is_one_line_on_the_page(browser: Browser, workdir: Path) -> None:
    preview = PreviewServer(workdir, "postgresql+psycopg://postgres:hunter2@127.0.0.1:1/none")
    try:
        page = open_page(browser, f"{preview.url}/reports", [])
        [line] = page.locator("h1 ~ *").all_inner_texts()
        assert line.startswith("database postgresql+psycopg://postgres:********@127.0.0.1:1/none: "), line
        assert "hunter2" not in page.content() and "Traceback" not in page.content()
        assert page.get_by_role("alert").inner_text() == line
        page.goto(f"{preview.url}/issue/2016-02/")
        page.frame_locator("#frame").locator("h1.issue-title").wait_for()  # the preview itself goes on
        page.close()
    finally:
        preview.stop()
