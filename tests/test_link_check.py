"""`mailer check --links` and `send --list` with check_links_before_send, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import Result

from mailer import __version__
from mailer.audience.database import deliveries, open_database
from mailer.audience.lists import add_subscriber, create_list
from mailer.settings import Settings
from tests.cli_helpers import run_cli
from tests.conftest import send_environment
from tests.smtp_server import SMTPServer

REDIRECTS = {
    "/loop-a": (302, "/loop-b"),
    "/loop-b": (302, "/loop-a"),
    "/moved": (301, "/ok"),
    "/elsewhere": (302, "/ok"),
    "/to-ftp": (302, "ftp://127.0.0.1/file.pdf"),
    "/gone": (307, "/missing"),
}
STATUS = {"/missing": 404, "/missing-logo.png": 404, "/missing-picture.png": 404, "/error": 500}


class Site(ThreadingHTTPServer):
    """Pages and images as servers answer them: fine, missing, failing, slow, looping, moved, refusing HEAD."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[tuple[str, str, str]] = []
        self.release = threading.Event()
        """Set when the test ends, so the slow page stops waiting."""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Site

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, *, body: bool) -> None:
        self.server.requests.append((self.command, self.path, self.headers.get("User-Agent", "")))
        if self.path == "/slow" or (self.path == "/head-hangs" and not body):
            self.server.release.wait(10)
        if self.path == "/busy":
            return self._send(429)
        if self.path == "/no-head" and not body:
            return self._send(405)
        if self.path in REDIRECTS:
            status, location = REDIRECTS[self.path]
            return self._send(status, location=location)
        self._send(STATUS.get(self.path, 200), body=body)

    def _send(self, status: int, *, location: str = "", body: bool = False) -> None:
        content = b"\x89PNG\r\n" if self.path.endswith(".png") else b"<p>hello</p>"
        self.send_response(status)
        if location:
            self.send_header("Location", location)
        self.send_header("Content-Type", "image/png" if self.path.endswith(".png") else "text/html")
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        if body:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the checker reads headers only
                self.wfile.write(content)


@pytest.fixture
def site() -> Iterator[Site]:
    server = Site()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_project(folder: Path, site: Site, issue: str) -> Path:
    """A content repository whose mailer.toml and issue link only to the test site."""
    (folder / "issues").mkdir(parents=True, exist_ok=True)
    (folder / "mailer.toml").write_text(
        f'public_url = "{site.base}"\n'
        "\n"
        "[branding]\n"
        'name = "Test"\n'
        f'website = "{site.base}/ok"\n'
        "\n"
        "[branding.logo]\n"
        f'src = "{site.base}/missing-logo.png"\n'
        'alt = "Test"\n',
        encoding="utf-8",
    )
    path = folder / "issues" / "2016-03.yaml"
    path.write_text(issue, encoding="utf-8")
    return path


ENV = {"MAILER_LINK_CHECK_TIMEOUT": "0.5", "NO_PROXY": "127.0.0.1"}


def mailer(folder: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    return run_cli(*args, cwd=folder, env={**ENV, **(env or {})})


def every_kind_of_link(base: str, closed_port: int) -> str:
    return f"""\
title: March 2016 Monthly Update
date: 2016-03-10
preheader: What happened in March
spotlight:
  headline: Links of every kind
  url: {base}/ok
  intro:
    - Read [the report]({base}/moved) and [the old page]({base}/missing).
news:
  stories:
    - title: A story
      url: {base}/ok
      image: {{src: {base}/missing-picture.png, alt: A picture}}
      paragraphs:
        - The first paragraph.
      links:
        - {{label: Error, url: {base}/error}}
        - {{label: Slow, url: {base}/slow}}
        - {{label: Loop, url: {base}/loop-a}}
        - {{label: No HEAD, url: {base}/no-head}}
        - {{label: Refused, url: "http://127.0.0.1:{closed_port}/"}}
        - {{label: Elsewhere, url: {base}/elsewhere}}
        - {{label: FTP, url: {base}/to-ftp}}
        - {{label: Gone, url: {base}/gone}}
        - {{label: Write to us, url: "mailto:office@example.org"}}
"""


def test_check_links_reports_each_broken_link_where_it_is_written(tmp_path: Path, site: Site, closed_port: int) -> None:
    base = site.base
    write_project(tmp_path, site, every_kind_of_link(base, closed_port))

    result = mailer(tmp_path, "check", "--links", "issues/2016-03.yaml")

    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"issues/2016-03.yaml:8:25: spotlight.intro[0]: warning: {base}/moved redirects permanently to {base}/ok; "
        "link there instead",
        f"issues/2016-03.yaml:8:74: spotlight.intro[0]: 404 Not Found: {base}/missing",
        f"issues/2016-03.yaml:13:20: news.stories[0].image.src: 404 Not Found: {base}/missing-picture.png",
        f"issues/2016-03.yaml:17:31: news.stories[0].links[0].url: 500 Internal Server Error: {base}/error",
        f"issues/2016-03.yaml:18:30: news.stories[0].links[1].url: timed out (no answer within 0.5 s): {base}/slow",
        f"issues/2016-03.yaml:19:30: news.stories[0].links[2].url: redirect loop ({base}/loop-a -> {base}/loop-b -> "
        f"{base}/loop-a): {base}/loop-a",
        f"issues/2016-03.yaml:21:33: news.stories[0].links[4].url: connection refused: http://127.0.0.1:{closed_port}/",
        f"issues/2016-03.yaml:23:29: news.stories[0].links[6].url: redirects to ftp://127.0.0.1/file.pdf, which is "
        f"not http(s) (not followed): {base}/to-ftp",
        f"issues/2016-03.yaml:24:30: news.stories[0].links[7].url: 404 Not Found (after a redirect to {base}/missing): "
        f"{base}/gone",
        f"mailer.toml:8: branding.logo.src: 404 Not Found: {base}/missing-logo.png",
    ]
    assert result.stdout.splitlines() == [
        "1 issue file OK",
        f"issues/2016-03.yaml:22:35: news.stories[0].links[5].url: note: {base}/elsewhere redirects to {base}/ok",
        "14 links checked, 9 broken, 2 redirected",
    ]
    assert ("GET", "/no-head") in {(method, path) for method, path, _ in site.requests}  # HEAD refused: GET works


def test_check_links_asks_politely_and_once_per_link(tmp_path: Path, site: Site) -> None:
    base = site.base
    write_project(tmp_path, site, every_kind_of_link(base, 9).replace("/missing-logo.png", "/ok"))
    (tmp_path / "mailer.toml").write_text(
        (tmp_path / "mailer.toml").read_text(encoding="utf-8").replace("/missing-logo.png", "/ok"), encoding="utf-8"
    )
    issue = f"""\
title: March 2016 Monthly Update
date: 2016-03-10
preheader: What happened in March
news:
  stories:
    - title: A story
      url: {base}/ok
      paragraphs:
        - See [the same page]({base}/ok#part-two) and [one that refuses HEAD]({base}/no-head).
"""
    (tmp_path / "issues" / "2016-03.yaml").write_text(issue, encoding="utf-8")

    result = mailer(tmp_path, "check", "--links", "issues/2016-03.yaml")

    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout.splitlines() == ["1 issue file OK", "4 links checked, 0 broken, 0 redirected"]
    assert sorted((method, path) for method, path, _ in site.requests) == [
        ("GET", "/no-head"),
        ("HEAD", "/"),
        ("HEAD", "/no-head"),
        ("HEAD", "/ok"),
    ]  # the web version, the email and the issue all link to /ok (one with a #fragment): one request
    assert {agent for _, _, agent in site.requests} == {f"mailer-link-check/{__version__} (+{base})"}


def test_check_without_links_fetches_nothing(tmp_path: Path, site: Site) -> None:
    write_project(tmp_path, site, every_kind_of_link(site.base, 9))

    result = mailer(tmp_path, "check", "issues/2016-03.yaml")

    assert (result.exit_code, result.stdout, site.requests) == (0, "1 issue file OK\n", [])


ONE_BROKEN_LINK = """\
title: March 2016 Monthly Update
date: 2016-03-10
preheader: What happened in March
news:
  stories:
    - title: A story
      url: {base}/ok
      paragraphs:
        - The first paragraph.
      links:
        - {{label: Missing, url: {base}/missing}}
"""


@pytest.fixture
def project(tmp_path: Path, site: Site, send_settings: Settings) -> Path:
    folder = tmp_path / "content"
    write_project(folder, site, ONE_BROKEN_LINK.format(base=site.base))
    (folder / "mailer.toml").write_text(
        (folder / "mailer.toml").read_text(encoding="utf-8").replace("/missing-logo.png", "/logo.png"),
        encoding="utf-8",
    )
    engine = open_database(send_settings.database_url)
    create_list(engine, "staff", "All staff")
    add_subscriber(engine, "staff", "ana@example.org")
    engine.dispose()
    return folder


def ledger_rows(settings: Settings) -> int:
    engine = open_database(settings.database_url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(sa.select(sa.func.count()).select_from(deliveries)).scalar_one())
    finally:
        engine.dispose()


def test_send_refuses_a_broken_link_before_any_message_or_ledger_row(
    project: Path, site: Site, send_settings: Settings, smtp_server: SMTPServer
) -> None:
    env = {**send_environment(send_settings, smtp_server), "MAILER_CHECK_LINKS_BEFORE_SEND": "true"}

    result = mailer(project, "send", "issues/2016-03.yaml", "--list", "staff", env=env)

    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"issues/2016-03.yaml:11:33: news.stories[0].links[0].url: 404 Not Found: {site.base}/missing",
        "not sent: 1 broken link (check_links_before_send is on); fix them, or pass --force to send anyway",
    ]
    assert result.stdout == ""
    assert smtp_server.recorder.attempts == {}
    assert ledger_rows(send_settings) == 0


def test_send_with_force_sends_despite_a_broken_link_and_says_so(
    project: Path, site: Site, send_settings: Settings, smtp_server: SMTPServer
) -> None:
    env = {**send_environment(send_settings, smtp_server), "MAILER_CHECK_LINKS_BEFORE_SEND": "true"}

    result = mailer(project, "send", "issues/2016-03.yaml", "--list", "staff", "--force", env=env)

    assert result.exit_code == 0
    assert result.stderr.splitlines() == [
        f"issues/2016-03.yaml:11:33: news.stories[0].links[0].url: 404 Not Found: {site.base}/missing",
        "sending anyway (--force)",
    ]
    assert result.stdout.startswith("2016-03 to 'staff': 1 sent, 0 failed")
    assert smtp_server.recorder.delivered() == {"ana@example.org": 1}


def test_send_checks_no_links_unless_the_setting_is_on(
    project: Path, site: Site, send_settings: Settings, smtp_server: SMTPServer
) -> None:
    result = mailer(
        project, "send", "issues/2016-03.yaml", "--list", "staff", env=send_environment(send_settings, smtp_server)
    )

    assert result.exit_code == 0
    assert smtp_server.recorder.delivered() == {"ana@example.org": 1}
    assert site.requests == []


def test_a_head_that_hangs_is_tried_again_with_get_and_a_busy_server_is_not_broken(site: Site) -> None:
    """Some servers never answer HEAD; 429 says "not now", not "gone": neither may stop a send."""
    import asyncio

    from mailer.compose.link_fetch import fetch_all
    from mailer.settings import load_settings
    from tests.conftest import ROOT

    settings = load_settings(ROOT / "mailer.toml", link_check_timeout=1)
    outcomes = asyncio.run(fetch_all([f"{site.base}/head-hangs", f"{site.base}/busy"], settings))
    assert {url.rsplit("/", 1)[1]: outcome.problem for url, outcome in outcomes.items()} == {
        "head-hangs": None,
        "busy": None,
    }
    assert ("GET", "/head-hangs") in [(method, path) for method, path, _ in site.requests]
