"""Browser preview with live reload: render on every save, push the news to open pages (SSE).

The state lives in `Previewer`; the web app (Starlette, served by uvicorn on 127.0.0.1) only
reads it. A watcher re-renders when an issue file, a template or the config file changes;
an invalid edit keeps the last good render and shows the errors as `mailer check` prints them.
The Reports page opens the database only when it is asked for: a preview needs none.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import errno
import html
import json
import socket
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
import uvicorn
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, DBAPIError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from watchfiles import awatch

from mailer.audience.database import open_database
from mailer.audience.subscriber_admin import utc_minute
from mailer.compose.build import size_warning
from mailer.compose.issues_folder import slug_of
from mailer.compose.load import load_issue
from mailer.compose.model import Issue
from mailer.compose.placeholders import fill, recipient_values
from mailer.compose.render import RenderedIssue, email_image_base, render_issue
from mailer.compose.templates import default_templates_dir
from mailer.delivery.report import IssueReport, sent_issue_reports
from mailer.errors import MailerError
from mailer.settings import Settings, config_path, load_settings, mask_url_password
from mailer.web.pages import page_templates


@dataclass
class Preview:
    """The last good render of one issue, and the problems of the current file if it is broken."""

    path: Path
    issue: Issue | None = None
    rendered: RenderedIssue | None = None
    errors: list[str] = field(default_factory=list)
    version: int = 0


class Previewer:
    def __init__(self, paths: list[Path], config_file: Path | None) -> None:
        self.config_file = config_file
        self.previews = {slug_of(path): Preview(path) for path in paths}
        self.settings: Settings | None = None
        self.changed = asyncio.Condition()
        self.database: tuple[str, Engine] | None = None
        self.database_lock = threading.Lock()

    def render_all(self) -> None:
        try:
            self.settings = load_settings(self.config_file)
            settings_errors: list[str] = []
        except MailerError as error:
            settings_errors = error.lines()
        for slug, preview in self.previews.items():
            preview.version += 1
            if settings_errors or self.settings is None:
                preview.errors = settings_errors
                continue
            try:
                issue = load_issue(preview.path, max_bytes=self.settings.max_issue_bytes)
                preview.rendered = render_issue(issue, slug, self.settings)
                preview.issue = issue
                preview.errors = []
            except MailerError as error:
                preview.errors = error.lines()

    def watched(self) -> list[Path]:
        settings = self.settings
        templates = (settings.templates_dir if settings and settings.templates_dir else None) or default_templates_dir()
        folders = {preview.path.resolve().parent for preview in self.previews.values()}
        return [*folders, Path(templates).resolve(), config_path(self.config_file).resolve().parent]

    async def watch(self, stop: asyncio.Event) -> None:
        async for _ in awatch(*self.watched(), stop_event=stop, debounce=150, step=50):
            await asyncio.to_thread(self.render_all)
            async with self.changed:
                self.changed.notify_all()

    def reports(self) -> list[IssueReport]:
        """Every sent issue's figures; the database is opened on the first call (MailerError in one line)."""
        if self.settings is None:
            raise MailerError("mailer.toml has errors (an issue's page lists them); fix it to see the reports")
        url = self.settings.database_url
        with self.database_lock:
            if no_database_yet(url):
                return []
            if self.database is None or self.database[0] != url:
                self.close()
                self.database = (url, open_database(url))
            engine = self.database[1]
        try:
            return sent_issue_reports(engine)
        except DBAPIError as error:
            reason = str(error.orig or error).strip().splitlines()[0]
            raise MailerError(f"database {mask_url_password(url)}: {mask_url_password(reason)}") from None

    def close(self) -> None:
        if self.database is not None:
            self.database[1].dispose()
            self.database = None

    def state(self, slug: str) -> dict[str, object]:
        preview = self.previews[slug]
        rendered, issue, settings = preview.rendered, preview.issue, self.settings
        size = len(rendered.email_html.encode()) if rendered else 0
        return {
            "version": preview.version,
            "errors": preview.errors,
            "subject": issue.email_subject if issue else "",
            "preheader": issue.preheader if issue else "",
            "sender": (settings.sender or "(sender not set)") if settings else "",
            "size_kb": round(size / 1024, 1),
            "size_warning": (size_warning(size) or "") if rendered else "",
            "badge": badge(issue),
        }


def badge(issue: Issue | None, today: dt.date | None = None) -> str:
    """What the preview flags about an issue's status: a draft, or a date still to come."""
    if issue is None:
        return ""
    if issue.is_draft:
        return "Draft"
    if issue.date > (today or dt.date.today()):
        return f"Dated {issue.date.isoformat()}"
    return ""


def no_database_yet(url: str) -> bool:
    """A SQLite file not made yet: nothing was sent, and looking should not create it."""
    try:
        parsed = sa.make_url(url)
    except (ArgumentError, ValueError):
        return False  # opening it says what is wrong, in one line
    return parsed.get_backend_name() == "sqlite" and bool(parsed.database) and not Path(parsed.database or "").exists()


BAR_WIDTH = 240
EXAMPLE_LENGTH = 160


def report_view(report: IssueReport) -> dict[str, object]:
    """One issue as the Reports page draws it: each figure as text, as a share of the messages attempted and as a bar on one scale."""
    figures = [
        ("Sent", "sent", report.sent, ""),
        ("Bounced (hard)", "hard", report.bounced_hard, ".1%"),
        ("Bounced (soft)", "soft", report.bounced_soft, ".1%"),
        ("Complaints", "complaint", report.complaints, ".2%"),
        ("Unsubscribes", "unsubscribe", report.unsubscribes, ".1%"),
    ]
    scale = max(1, *(count for _, _, count, _ in figures))  # refused at RCPT, a bounce need not be among the sent
    others = [
        f"{count:,} {what}"
        for count, what in (
            (report.failed, "failed"),
            (report.uncertain, "uncertain"),
            (report.pending, "pending"),
            (report.skipped, "skipped (had it through another list)"),
        )
        if count
    ]
    return {
        "issue": report.issue,
        "last_sent": utc_minute(dt.datetime.fromisoformat(report.last_sent)) if report.last_sent else "",
        "figures": [
            {
                "label": label,
                "kind": kind,
                "count": f"{count:,}",
                "value": count,
                "rate": (format(report.rate(count), share) if report.attempted else "-") if share else "",
                "width": round(count / scale * BAR_WIDTH, 2),
            }
            for label, kind, count, share in figures
        ],
        "others": ", ".join(others),
        "reasons": [
            {
                "status": reason.status or "no status",
                "count": f"{reason.count:,}",
                "example": shorten(reason.example),
                "full": reason.example,
            }
            for reason in report.reasons
        ],
    }


def shorten(text: str, limit: int = EXAMPLE_LENGTH) -> str:
    """A remote server's words on one line, cut to a length a table cell can show."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "\u2026"


SAMPLE_NAME = "Ana Example"


def sample_recipient(*, nameless: bool = False) -> dict[str, str]:
    """Who the preview shows the email to: a subscriber with a name, or (the page's switch) one without."""
    return recipient_values("ana@example.org", "" if nameless else SAMPLE_NAME, "#unsubscribe-link-of-each-recipient")


def create_app(previewer: Previewer) -> Starlette:
    pages = page_templates("preview_page")

    def preview_or_404(request: Request) -> Preview:
        slug = request.path_params["slug"]
        if slug not in previewer.previews:
            raise LookupError(slug)
        return previewer.previews[slug]

    async def index(request: Request) -> Response:
        entries = [
            {
                "slug": slug,
                "title": preview.issue.title if preview.issue else "",
                "date": preview.issue.date.isoformat() if preview.issue else "",
                "badge": badge(preview.issue) if preview.issue else ("Errors" if preview.errors else ""),
            }
            for slug, preview in previewer.previews.items()
        ]
        return HTMLResponse(pages.get_template("index.html").render(entries=entries))

    async def reports(request: Request) -> Response:
        try:
            found = await asyncio.to_thread(previewer.reports)
            problem = ""
        except MailerError as error:
            found, problem = [], " ".join(error.lines())
        body = pages.get_template("reports.html").render(
            reports=[report_view(report) for report in found],
            problem=problem,
            previewed=set(previewer.previews),
            bar_width=BAR_WIDTH,
        )
        return HTMLResponse(body, headers={"Cache-Control": "no-store"})

    async def page(request: Request) -> Response:
        try:
            preview_or_404(request)
        except LookupError:
            return PlainTextResponse("no such issue", status_code=404)
        slug = request.path_params["slug"]
        state = previewer.state(slug)
        return HTMLResponse(pages.get_template("page.html").render(slug=slug, state=state))

    async def output(request: Request) -> Response:
        try:
            preview = preview_or_404(request)
        except LookupError:
            return PlainTextResponse("no such issue", status_code=404)
        rendered = preview.rendered
        if rendered is None:
            return PlainTextResponse("not rendered yet: see the errors above", status_code=503)
        kind = request.path_params["kind"]
        headers = {"Cache-Control": "no-store"}
        values = sample_recipient(nameless=request.query_params.get("nameless") == "1")
        if kind == "email.html":
            email = rendered.email_html
            if previewer.settings is not None and rendered.images:  # published or inline later; served here now
                email = email.replace(f'src="{email_image_base(rendered.slug, previewer.settings)}', 'src="images/')
            return HTMLResponse(fill(email, values, html.escape), headers=headers)
        if kind == "web.html":
            return HTMLResponse(rendered.web_html, headers=headers)
        if kind == "email.txt":
            return PlainTextResponse(fill(rendered.text, values), headers=headers)
        return PlainTextResponse("not found", status_code=404)

    async def image(request: Request) -> Response:
        """The issue's local images, so authors see their photos before publishing."""
        try:
            preview = preview_or_404(request)
        except LookupError:
            return PlainTextResponse("no such issue", status_code=404)
        name = request.path_params["name"]
        found = next((i for i in (preview.rendered.images if preview.rendered else ()) if i.name == name), None)
        if found is None:
            return PlainTextResponse("no such image", status_code=404)
        return Response(found.data, media_type=found.media_type, headers={"Cache-Control": "no-store"})

    async def events(request: Request) -> Response:
        slug = request.path_params["slug"]
        if slug not in previewer.previews:
            return PlainTextResponse("no such issue", status_code=404)

        async def stream() -> AsyncIterator[str]:
            yield f"data: {json.dumps(previewer.state(slug))}\n\n"
            while not await request.is_disconnected():
                async with previewer.changed:
                    try:
                        await asyncio.wait_for(previewer.changed.wait(), timeout=15)
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                yield f"data: {json.dumps(previewer.state(slug))}\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    routes = [
        Route("/", index),
        Route("/reports", reports),
        Route("/issue/{slug}/", page),
        Route("/issue/{slug}/events", events),
        Route("/issue/{slug}/images/{name}", image),
        Route("/issue/{slug}/{kind}", output),
    ]
    return Starlette(routes=routes)


def check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise MailerError(f"port {port} on {host} is already in use; choose another with --port") from None
            raise MailerError(f"cannot listen on {host}:{port}: {error.strerror}") from None


async def serve_preview(
    paths: list[Path],
    *,
    config_file: Path | None = None,
    host: str = "127.0.0.1",
    port: int = 8025,
    ready: asyncio.Event | None = None,
) -> None:
    """Serve until cancelled (Ctrl-C); `ready` is set once the server listens."""
    check_port_free(host, port)
    previewer = Previewer(paths, config_file)
    await asyncio.to_thread(previewer.render_all)
    server = uvicorn.Server(
        uvicorn.Config(create_app(previewer), host=host, port=port, log_level="warning", lifespan="off")
    )
    stop = asyncio.Event()
    watcher = asyncio.create_task(previewer.watch(stop))

    async def announce() -> None:
        while not server.started:
            await asyncio.sleep(0.05)
        if ready is not None:
            ready.set()

    announcer = asyncio.create_task(announce())
    try:
        await server.serve()
    finally:
        stop.set()
        announcer.cancel()
        await watcher
        previewer.close()
