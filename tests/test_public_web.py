"""`mailer serve`: archive, web versions, unsubscribe (page and RFC 8058 one-click), double opt-in.

The pages and forms are checked in process, through Starlette's TestClient on the app `mailer serve`
runs (`web` fixture): fast, and a request returns only after its background work (the
confirmation mail) is done, so "nothing was sent" is a fact, not a guess after a pause. The whole
path — a real `mailer serve` process on 127.0.0.1 per database, stopped with SIGTERM, mailing
the aiosmtpd server of the `smtp_server` fixture — runs in the archive and browser tests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import email
import email.policy
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy.engine import Engine
from starlette.testclient import TestClient

from mailer.audience.database import open_database
from mailer.audience.lists import add_subscriber, create_list, mailable_subscribers, set_public, unsubscribe
from mailer.cli import cli
from mailer.delivery.send import send_to_list
from mailer.delivery.unsubscribe import make_token
from mailer.settings import Settings, load_settings
from mailer.web.confirmation import CONFIRM_SALT, make_confirm_token
from mailer.web.public_web import create_app
from tests.browser import chromium, local_only
from tests.conftest import ROOT, SECRET, read_line, wait_until
from tests.smtp_server import SMTPServer, free_port
from tests.test_message_headers import display_name, long_lines

ONE_CLICK = {"List-Unsubscribe": "One-Click"}
OUTPUT = ROOT / "test-output"


class PublicServer:
    """`mailer serve` in a child process; `url` is also its public_url, so emails link back to it."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**env, "MAILER_PUBLIC_URL": self.url}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mailer", "serve", "--port", str(self.port)],
            cwd=workdir,
            env={**self.env, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = read_line(self.process, timeout=30, what="mailer serve's first line")
        assert line.startswith("serving issues/ at http://127.0.0.1:"), line
        wait_until(self.answers, timeout=20, what=f"mailer serve answering on {self.url}")

    def answers(self) -> bool:
        try:
            httpx.get(f"{self.url}/feed.xml", timeout=2)
        except httpx.TransportError:
            return False
        return True

    def settings(self) -> Settings:
        return load_settings(
            ROOT / "mailer.toml",
            public_url=self.url,
            database_url=self.env["MAILER_DATABASE_URL"],
            smtp_host="127.0.0.1",
            smtp_port=int(self.env["MAILER_SMTP_PORT"]),
            smtp_tls="none",
            sender=self.env["MAILER_SENDER"],
            unsubscribe_secret=SECRET,
            smtp_pool_size=2,
        )

    def stop(self) -> str:
        self.process.terminate()
        _, errors = self.process.communicate(timeout=20)
        return errors


class FakeClock:
    """time.time for the app's confirmation links, moved by the test instead of waiting."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class InProcessWeb:
    """The app of `mailer serve`, called in this process; `url` is its public_url, so emails link back to it."""

    url = "http://testserver"

    def __init__(self, workdir: Path, database_url: str, smtp_port: int, engine: Engine) -> None:
        self.clock = FakeClock()
        self._settings = load_settings(
            ROOT / "mailer.toml",
            public_url=self.url,
            issues_dir=workdir / "issues",
            database_url=database_url,
            smtp_host="127.0.0.1",
            smtp_port=smtp_port,
            smtp_tls="none",
            sender="ICMPD Newsletter <newsletter@icmpd.org>",
            unsubscribe_secret=SECRET,
            subscribe_per_ip_per_hour=4,
            smtp_pool_size=2,
        )
        self.app = create_app(self._settings, engine, now=self.clock)

    def settings(self) -> Settings:
        return self._settings

    def browser(self) -> TestClient:
        """A client that keeps cookies, as a browser does; a request returns once its background tasks ran."""
        return TestClient(self.app, base_url=self.url, follow_redirects=False)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        """A request without cookies, like `httpx.get`."""
        with self.browser() as client:
            response: httpx.Response = client.get(url, **kwargs)
        return response

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        with self.browser() as client:
            response: httpx.Response = client.post(url, **kwargs)
        return response


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = open_database(database_url)
    create_list(engine, "staff", "All staff")
    create_list(engine, "news", "ICMPD Monthly Update", public=True)
    yield engine
    engine.dispose()


@pytest.fixture
def web(workdir: Path, engine: Engine, database_url: str, smtp_server: SMTPServer) -> InProcessWeb:
    return InProcessWeb(workdir, database_url, smtp_server.port, engine)


@pytest.fixture
def server(workdir: Path, engine: Engine, database_url: str, smtp_server: SMTPServer) -> Iterator[PublicServer]:
    """A real `mailer serve` process; it must stop on SIGTERM without a traceback."""
    env = {
        **os.environ,
        "MAILER_DATABASE_URL": database_url,
        "MAILER_SMTP_HOST": "127.0.0.1",
        "MAILER_SMTP_PORT": str(smtp_server.port),
        "MAILER_SMTP_TLS": "none",
        "MAILER_SENDER": "ICMPD Newsletter <newsletter@icmpd.org>",
        "MAILER_UNSUBSCRIBE_SECRET": SECRET,
        "MAILER_SUBSCRIBE_PER_IP_PER_HOUR": "4",
    }
    public = PublicServer(workdir, env)
    yield public
    errors = public.stop()
    assert "Traceback" not in errors, errors


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def status_of(engine: Engine, list_name: str, address: str) -> bool:
    return address in [s.email for s in mailable_subscribers(engine, list_name)]


def wait_for_mail(smtp_server: SMTPServer, count: int, timeout: float = 10) -> list[EmailMessage]:
    return [
        email.message_from_bytes(m.data, policy=email.policy.default)
        for m in smtp_server.recorder.wait_for(count, timeout=timeout)
    ]


def unsubscribe_link(
    engine: Engine, server: PublicServer | InProcessWeb, address: str, list_name: str = "staff"
) -> str:
    from mailer.audience.lists import find_subscriber_id, list_id

    sid = find_subscriber_id(engine, address)
    assert sid is not None
    return f"{server.url}/unsubscribe/{make_token(SECRET, sid, list_id(engine, list_name))}"


# --- archive -----------------------------------------------------------------------------------


def test_archive_lists_issues_and_the_emails_view_in_browser_link_leads_to_the_web_version(
    server: PublicServer, engine: Engine, smtp_server: SMTPServer
) -> None:
    index = httpx.get(f"{server.url}/")
    assert index.status_code == 200
    assert index.text.index("February 2016 Monthly Update") < index.text.index("October 2015 Monthly Update")

    add_subscriber(engine, "staff", "ana@example.org", name="Ana")
    asyncio.run(send_to_list(engine, server.settings(), ROOT / "issues" / "2016-02.yaml", "staff"))
    [message] = wait_for_mail(smtp_server, 1)
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    view_link = re.search(r'<a href="([^"]+)"[^>]*>View this email in your browser</a>', html)
    assert view_link and view_link.group(1) == f"{server.url}/2016-02/"
    page = httpx.get(view_link.group(1))
    assert page.status_code == 200
    assert "<title>February 2016 Monthly Update" in page.text
    assert "ana@example.org" not in page.text and "unsubscribe/" not in page.text
    assert httpx.get(f"{server.url}/2016-02").headers.get("location") == "/2016-02/"
    assert httpx.get(f"{server.url}/1999-01/").status_code == 404

    feed = httpx.get(f"{server.url}/feed.xml")
    assert feed.headers["content-type"].startswith("application/atom+xml")
    atom = "{http://www.w3.org/2005/Atom}"
    entries = ET.fromstring(feed.content).findall(f"{atom}entry")
    assert [e.findtext(f"{atom}title") for e in entries] == [
        "February 2016 Monthly Update",
        "October 2015 Monthly Update",
    ]


# --- unsubscribe ---------------------------------------------------------------------------------


def test_one_click_post_as_gmail_sends_it_unsubscribes_at_once_and_later_sends_skip_the_address(
    web: InProcessWeb, engine: Engine, smtp_server: SMTPServer
) -> None:
    add_subscriber(engine, "staff", "ana@example.org", name="Ana")
    add_subscriber(engine, "staff", "bob@example.org", name="Bob")
    settings = web.settings()
    asyncio.run(send_to_list(engine, settings, settings.issues_dir / "2015-10.yaml", "staff"))
    messages = wait_for_mail(smtp_server, 2)
    to_ana = next(m for m in messages if "ana@example.org" in str(m["To"]))
    assert to_ana["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = re.search(r"<(http[^>]+)>", str(to_ana["List-Unsubscribe"]))
    assert link

    answer = web.post(
        link.group(1),
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "Google-Unsubscribe"},
    )
    assert answer.status_code == 200
    assert not status_of(engine, "staff", "ana@example.org")
    assert status_of(engine, "staff", "bob@example.org")

    summary = asyncio.run(send_to_list(engine, settings, settings.issues_dir / "2016-02.yaml", "staff"))
    assert (summary.sent, summary.skipped) == (1, 0)
    delivered = smtp_server.recorder.delivered()
    assert delivered["ana@example.org"] == 1 and delivered["bob@example.org"] == 2

    assert web.post(link.group(1), data=ONE_CLICK).status_code == 200  # a replay changes nothing
    assert not status_of(engine, "staff", "ana@example.org")


def test_get_only_shows_a_button_and_the_post_unsubscribes_from_one_list_or_all(
    web: InProcessWeb, engine: Engine
) -> None:
    for list_name in ("staff", "news"):
        add_subscriber(engine, list_name, "ana@example.org", name="Ana")
    link = unsubscribe_link(engine, web, "ana@example.org")
    with web.browser() as browser:
        page = browser.get(link)
        assert page.status_code == 200
        assert "Stop sending <strong>All staff</strong> to an•••@example.org?" in page.text
        assert page.headers["referrer-policy"] == "no-referrer"
        assert status_of(engine, "staff", "ana@example.org"), "a GET (mail scanners follow links) must not unsubscribe"

        done = browser.post(link, data={"csrf": csrf_of(page), "scope": "list"})
        assert done.status_code == 200 and "You are unsubscribed" in done.text
        assert not status_of(engine, "staff", "ana@example.org")
        assert status_of(engine, "news", "ana@example.org")

        page = browser.get(link)
        assert "no longer receives" in page.text
        browser.post(link, data={"csrf": csrf_of(page), "scope": "all"})
    assert not status_of(engine, "news", "ana@example.org")
    with pytest.raises(Exception, match="suppressed"):
        add_subscriber(engine, "news", "ana@example.org")


def test_tampered_and_foreign_tokens_are_refused_alike_and_forms_need_their_csrf_token(
    web: InProcessWeb, engine: Engine
) -> None:
    add_subscriber(engine, "staff", "ana@example.org", name="Ana")
    good = unsubscribe_link(engine, web, "ana@example.org")
    sid, lid, signature = good.rsplit("/", 1)[1].split(".")
    other_person = f"{web.url}/unsubscribe/{int(sid) + 1}.{lid}.{signature}"
    flipped = f"{web.url}/unsubscribe/{sid}.{lid}.{signature[:-1]}{'A' if signature[-1] != 'A' else 'B'}"
    foreign = f"{web.url}/unsubscribe/{make_token('f' * 40, int(sid), int(lid))}"
    nobody = f"{web.url}/unsubscribe/{make_token('f' * 40, 424242, int(lid))}"
    answers = [web.get(url) for url in (other_person, flipped, foreign, nobody, f"{web.url}/unsubscribe/x")]
    assert {a.status_code for a in answers} == {400}
    assert len({a.text for a in answers}) == 1, "the answer must not depend on whether an address exists"
    for url in (other_person, flipped, foreign):
        assert web.post(url, data=ONE_CLICK).status_code == 400

    assert web.post(good, data={"scope": "all"}).status_code == 403
    with web.browser() as browser:
        page = browser.get(good)
        browser.cookies.clear()
        assert browser.post(good, data={"csrf": csrf_of(page), "scope": "all"}).status_code == 403
    assert status_of(engine, "staff", "ana@example.org")


# --- subscribe ---------------------------------------------------------------------------------


def subscribe(
    browser: httpx.Client, server: PublicServer | InProcessWeb, address: str, name: str, list_name: str = "news"
) -> httpx.Response:
    page = browser.get(f"{server.url}/subscribe/{list_name}")
    assert page.status_code == 200, page.text
    return browser.post(
        f"{server.url}/subscribe/{list_name}", data={"csrf": csrf_of(page), "email": address, "name": name}
    )


def confirmation_link(message: EmailMessage) -> str:
    found = re.search(r"(http://\S+/confirm/\S+)", message.get_content())
    assert found, message.get_content()
    return found.group(1)


def test_double_opt_in_subscribes_only_after_the_confirmation_button(
    web: InProcessWeb, engine: Engine, smtp_server: SMTPServer
) -> None:
    with web.browser() as browser:
        answer = subscribe(browser, web, "Zoe@example.org", "Zoë Müller")
        assert answer.status_code == 200 and "Check your inbox" in answer.text
        [mail] = wait_for_mail(smtp_server, 1)
        assert smtp_server.recorder.messages[0].recipients == ["Zoe@example.org"]
        assert str(mail["To"]) == "Zoë Müller <Zoe@example.org>"
        assert not status_of(engine, "news", "Zoe@example.org")

        link = confirmation_link(mail)
        page = browser.get(link)
        assert "Confirm subscription" in page.text
        assert not status_of(engine, "news", "Zoe@example.org"), "following the link alone must not subscribe"
        done = browser.post(link, data={"csrf": csrf_of(page)})
        assert done.status_code == 200 and "You are subscribed" in done.text
        assert status_of(engine, "news", "Zoe@example.org")
        [subscriber] = [s for s in mailable_subscribers(engine, "news") if s.email == "Zoe@example.org"]
        assert subscriber.name == "Zoë Müller"

        unsubscribe(engine, "zoe@example.org")  # then someone replays the old confirmation link
        page = browser.get(link)
        replay = browser.post(link, data={"csrf": csrf_of(page)})
        assert replay.status_code == 409
        assert not status_of(engine, "news", "Zoe@example.org")


def test_expired_and_forged_confirmation_links_subscribe_nobody(web: InProcessWeb, engine: Engine) -> None:
    from mailer.audience.lists import list_id as id_of

    list_id = id_of(engine, "news")
    expired = make_confirm_token(SECRET, list_id, "old@example.org", "", now=lambda: web.clock() - 49 * 3600)
    forged = URLSafeTimedSerializer("f" * 40, salt=CONFIRM_SALT).dumps([list_id, "forged@example.org", ""])
    for token in (expired, forged, "nonsense"):
        page = web.get(f"{web.url}/confirm/{token}")
        assert page.status_code == 400 and "not valid or has expired" in page.text
        assert web.post(f"{web.url}/confirm/{token}", data={"csrf": "x"}).status_code == 400
    assert list(mailable_subscribers(engine, "news")) == []


def test_subscribe_answers_alike_for_any_address_and_resists_abuse(
    web: InProcessWeb, engine: Engine, smtp_server: SMTPServer
) -> None:
    add_subscriber(engine, "news", "member@example.org")
    unsubscribe(engine, "blocked@example.org", reason="complaint")
    with web.browser() as browser:
        answers = [
            subscribe(browser, web, address, "")
            for address in ("member@example.org", "blocked@example.org", "new@example.org")
        ]
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert len({a.text for a in answers}) == 1
        invalid = subscribe(browser, web, "not-an-address", "")
        assert invalid.status_code == 400 and "valid email address" in invalid.text
        assert subscribe(browser, web, "fifth@example.org", "").status_code == 429
    mails = wait_for_mail(smtp_server, 2)
    # in process, each POST returned only after its background task: the suppressed address's task is done, not late
    assert sorted(r for m in smtp_server.recorder.messages for r in m.recipients) == [
        "member@example.org",
        "new@example.org",
    ], "a suppressed address gets nothing"
    assert len(mails) == 2

    assert web.get(f"{web.url}/subscribe/staff").status_code == 404, "private lists have no form"
    assert web.get(f"{web.url}/subscribe/nope").text == web.get(f"{web.url}/subscribe/staff").text


def test_a_name_cannot_inject_headers_into_the_confirmation_mail(
    web: InProcessWeb, engine: Engine, smtp_server: SMTPServer
) -> None:
    with web.browser() as browser:
        answer = subscribe(browser, web, "eve@example.org", "Eve\r\nBcc: victim@example.org\r\nSubject: hi")
        assert answer.status_code == 200
    [mail] = wait_for_mail(smtp_server, 1)
    assert smtp_server.recorder.messages[0].recipients == ["eve@example.org"]
    assert mail["Bcc"] is None
    assert mail["Subject"] == "Confirm your subscription: ICMPD Monthly Update"
    assert b"\r\nBcc:" not in smtp_server.recorder.messages[0].data
    assert "victim" not in str(mail["To"]).split("<")[1]


NASTY_NAMES = [
    "Eve\r\nBcc: victim@example.org" + "Z" * 250,
    'Doe, John "JD" <jd@evil.example>; Group: a@b.example, c@d.example;',
    'Back\\slash \\"quoted\\" \\\\ end\\ "',
    "=?utf-8?q?Admin?= =?utf-8?b?QWRtaW4=?= Team =?",
    "W" * 300,
    "@" * 80 + " <>" * 30 + " <x@y.example>",
    "Zoë " + "Müller" * 40,
    "王小明" * 80,
    '"' * 70 + " (comment) [domain] " + "\\" * 70,
]
"""Specials, quotes, backslashes, groups, `@` and `<>`, encoded-word lookalikes, words longer than a line, non-ASCII."""


def test_nasty_names_give_one_to_address_and_the_cleaned_name_back_in_the_confirmation_mail(
    workdir: Path, database_url: str, engine: Engine, smtp_server: SMTPServer
) -> None:
    """The form keeps MAX_NAME (200) characters, so the 300-letter word arrives as 200: still more than a line."""
    from mailer.audience.clean_text import clean_text
    from mailer.web.public_web import MAX_NAME

    for index, typed in enumerate(NASTY_NAMES):
        site = InProcessWeb(workdir, database_url, smtp_server.port, engine)  # a fresh per-IP limit for each
        with site.browser() as browser:
            assert subscribe(browser, site, f"web{index}@example.org", typed).status_code == 200
    received = smtp_server.recorder.wait_for(len(NASTY_NAMES))
    for index, typed in enumerate(NASTY_NAMES):
        address = f"web{index}@example.org"
        [data] = [m.data for m in received if m.recipients == [address]]
        mail = email.message_from_bytes(data, policy=email.policy.default)
        assert isinstance(mail, EmailMessage)
        assert [a.addr_spec for a in mail["To"].addresses] == [address], address
        assert not mail["To"].defects, (address, mail["To"].defects)
        assert display_name(mail) == clean_text(typed)[:MAX_NAME].rstrip(), address
        assert long_lines(data) == [], address
        assert sorted(mail.keys()) == sorted(
            ["From", "To", "Subject", "Date", "Message-ID", "Auto-Submitted"]
            + ["Content-Type", "Content-Transfer-Encoding", "MIME-Version"]
        ), address


def test_the_confirmation_mail_goes_out_with_the_header_lines_it_was_built_with(
    web: InProcessWeb, smtp_server: SMTPServer
) -> None:
    """An address longer than a line: the email package would refold that To its own way, after the field name."""
    from mailer.delivery.headers import mailbox_header

    address = "l" * 64 + "@" + "d" * 63 + ".example.org"
    name = 'Zoë "Zo" Müller, Ana'
    with web.browser() as browser:
        assert subscribe(browser, web, address, name).status_code == 200
    [received] = smtp_server.recorder.wait_for(1)
    assert b"\r\n" + mailbox_header("To", name, address) in received.data
    mail = email.message_from_bytes(received.data, policy=email.policy.default)
    assert isinstance(mail, EmailMessage)
    assert [a.addr_spec for a in mail["To"].addresses] == [address]
    assert display_name(mail) == name
    assert [len(line) for line in long_lines(received.data)] == [len(f" <{address}>")], "the address alone"


def confirm(browser: httpx.Client, link: str) -> httpx.Response:
    page = browser.get(link)
    return browser.post(link, data={"csrf": csrf_of(page)})


def test_the_subscribe_form_mails_and_stores_the_name_without_control_characters(
    web: InProcessWeb, engine: Engine, smtp_server: SMTPServer
) -> None:
    """The same rule as `subscribers add` and import: breaks to spaces, controls and bidi overrides gone."""
    typed = " Zoë\r\n\tMüller\x00 \u202eRLO\u202c\u2028Jr\x1b "
    with web.browser() as browser:
        assert subscribe(browser, web, "zoe@example.org", typed).status_code == 200
        [mail] = wait_for_mail(smtp_server, 1)
        assert display_name(mail) == "Zoë Müller RLO Jr"
        assert confirm(browser, confirmation_link(mail)).status_code == 200
    [subscriber] = mailable_subscribers(engine, "news")
    assert (subscriber.email, subscriber.name) == ("zoe@example.org", "Zoë Müller RLO Jr")


def test_the_confirmation_mail_has_date_and_message_id_and_no_line_over_76(
    web: InProcessWeb, engine: Engine, smtp_server: SMTPServer
) -> None:
    """A long non-ASCII list title (the subject) and name: folded, and read back exactly."""
    title = (
        "Monatliche Mitteilungen des Internationalen Zentrums für die Entwicklung von Migrationspolitik "
        "— Ausgabe für Österreich, Südosteuropa und die Länder der Östlichen Partnerschaft"
    )
    name = (
        "Maria da Conceição de Sá Álvares Gonçalves Guimarães Magalhães Albuquerque e Vasconcelos, "
        "Международный центр по развитию миграционной политики"
    )
    create_list(engine, "nachrichten", title, public=True)
    with web.browser() as browser:
        assert subscribe(browser, web, "maria@example.org", name, "nachrichten").status_code == 200
        [received] = smtp_server.recorder.wait_for(1)
        mail = email.message_from_bytes(received.data, policy=email.policy.default)
        assert isinstance(mail, EmailMessage)
        assert long_lines(received.data) == []
        assert re.fullmatch(r"\w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}", mail["Date"])
        assert re.fullmatch(r"<[^<>@\s]+@icmpd\.org>", mail["Message-ID"])
        assert mail["Subject"] == f"Confirm your subscription: {title}"
        assert mail["To"].addresses[0].addr_spec == "maria@example.org"
        assert display_name(mail) == name
        assert mail["Content-Transfer-Encoding"] == "quoted-printable"
        assert f"asked to receive {title} from ICMPD" in mail.get_content()
        assert confirm(browser, confirmation_link(mail)).status_code == 200
    [subscriber] = mailable_subscribers(engine, "nachrichten")
    assert subscriber.name == name


def test_serve_refuses_to_start_without_its_settings(workdir: Path, database_url: str) -> None:
    runner = CliRunner(env={"MAILER_DATABASE_URL": database_url, "MAILER_SENDER": "News <news@example.org>"})
    with contextlib.chdir(workdir):
        done = runner.invoke(cli, ["serve", "--port", str(free_port())], prog_name="mailer")
    assert done.exception is None or isinstance(done.exception, SystemExit), done.exception
    assert done.exit_code == 1
    assert done.stderr.strip().startswith("unsubscribe_secret is not set")


def test_confirmation_tokens_expire_after_confirm_hours() -> None:
    from mailer.delivery.unsubscribe import BadToken
    from mailer.web.confirmation import read_confirm_token

    made = 1_700_000_000.0
    token = make_confirm_token(SECRET, 3, "ana@example.org", "Ana", now=lambda: made)
    request = read_confirm_token(SECRET, token, max_age_hours=48, now=lambda: made + 48 * 3600)
    assert (request.list_id, request.email, request.name) == (3, "ana@example.org", "Ana")
    assert request.issued == dt.datetime.fromtimestamp(made, dt.UTC)
    with pytest.raises(BadToken):
        read_confirm_token(SECRET, token, max_age_hours=48, now=lambda: made + 48 * 3600 + 1)
    with pytest.raises(BadToken):
        read_confirm_token(SECRET, token, max_age_hours=1, now=lambda: made + 3601)
    fresh = make_confirm_token(SECRET, 3, "ana@example.org", "Ana")  # the real clock, by default
    assert abs(read_confirm_token(SECRET, fresh, max_age_hours=48).issued - dt.datetime.now(dt.UTC)) < dt.timedelta(
        seconds=5
    )


def test_a_confirmation_link_expires_after_confirm_hours_on_the_site(
    web: InProcessWeb, engine: Engine, smtp_server: SMTPServer
) -> None:
    with web.browser() as browser:
        assert subscribe(browser, web, "late@example.org", "").status_code == 200
        link = confirmation_link(wait_for_mail(smtp_server, 1)[0])
        web.clock.advance(48 * 3600)
        page = browser.get(link)
        assert page.status_code == 200 and "Confirm subscription" in page.text
        web.clock.advance(1)
        assert browser.get(link).status_code == 400
        expired = browser.post(link, data={"csrf": csrf_of(page)})
        assert expired.status_code == 400 and "not valid or has expired" in expired.text
    assert not status_of(engine, "news", "late@example.org")


# --- in a browser ------------------------------------------------------------------------------


def test_a_person_subscribes_confirms_receives_the_issue_and_unsubscribes(
    server: PublicServer, engine: Engine, smtp_server: SMTPServer, tmp_path: Path
) -> None:
    with chromium() as browser:
        page = browser.new_page()
        page.route("**/*", local_only)
        page.goto(f"{server.url}/subscribe/news")
        page.get_by_label("Name").fill("Ana Alves")
        page.get_by_label("Email address").fill("ana@example.org")
        page.get_by_role("button", name="Subscribe").click()
        page.get_by_role("heading", name="Check your inbox").wait_for()

        [confirmation] = wait_for_mail(smtp_server, 1)
        page.goto(confirmation_link(confirmation))
        assert not status_of(engine, "news", "ana@example.org")
        page.get_by_role("button", name="Confirm subscription").click()
        page.get_by_role("heading", name="You are subscribed").wait_for()
        assert status_of(engine, "news", "ana@example.org")

        with concurrent.futures.ThreadPoolExecutor(1) as other_thread:  # Playwright's loop runs in this one
            summary = other_thread.submit(
                asyncio.run, send_to_list(engine, server.settings(), ROOT / "issues" / "2016-02.yaml", "news")
            ).result()
        assert summary.sent == 1
        _, issue = wait_for_mail(smtp_server, 2)
        email_html = issue.get_body(("html",)).get_content()  # type: ignore[union-attr]
        opened = tmp_path / "email.html"
        opened.write_text(email_html, encoding="utf-8")
        page.goto(opened.as_uri())
        with page.expect_navigation():
            page.get_by_role("link", name="Unsubscribe").click()
        assert re.match(rf"{re.escape(server.url)}/unsubscribe/\d+\.\d+\.", page.url)
        page.get_by_role("button", name="Unsubscribe", exact=True).click()
        page.get_by_role("heading", name="You are unsubscribed").wait_for()
        OUTPUT.mkdir(exist_ok=True)
        page.screenshot(path=str(OUTPUT / "unsubscribed.png"))
        assert "will no longer receive ICMPD Monthly Update" in page.inner_text("main")
    assert not status_of(engine, "news", "ana@example.org")


def test_one_address_gets_at_most_one_confirmation_mail_in_10_minutes_and_three_a_day(
    web: InProcessWeb, smtp_server: SMTPServer
) -> None:
    """Three IPs asking for the same victim in seconds: one mail; then at most one per 10 minutes, three a day."""
    ips = (f"198.51.100.{n}" for n in range(1, 100))

    def ask(address: str) -> str:
        with TestClient(web.app, base_url=web.url, client=(next(ips), 50000)) as browser:
            return subscribe(browser, web, address, "").text

    def mails_to_victim() -> int:
        return sum(1 for m in smtp_server.recorder.messages if m.recipients[0].lower() == "victim@example.org")

    answers = {ask("victim@example.org") for _ in range(3)}
    answers.add(ask("someone-else@example.org"))
    assert len(answers) == 1, "the visitor is told the same whether a mail went out or not"
    assert sorted(r for m in smtp_server.recorder.messages for r in m.recipients) == [
        "someone-else@example.org",
        "victim@example.org",
    ]
    web.clock.advance(5 * 60)
    ask("victim@example.org")
    assert mails_to_victim() == 1, "not twice in 10 minutes"
    for _ in range(4):
        web.clock.advance(11 * 60)
        ask("Victim@Example.org")
    assert mails_to_victim() == 3, "three a day"
    web.clock.advance(24 * 3600)
    ask("victim@example.org")
    assert mails_to_victim() == 4


def test_a_confirmation_link_for_a_list_made_private_since_subscribes_nobody(
    web: InProcessWeb, engine: Engine, smtp_server: SMTPServer
) -> None:
    with web.browser() as browser:
        subscribe(browser, web, "late@example.org", "")
        [mail] = wait_for_mail(smtp_server, 1)
        set_public(engine, "news", False)
        link = confirmation_link(mail)
        page = browser.get(link)
        answer = browser.post(link, data={"csrf": csrf_of(page)})
    assert answer.status_code == 409 and "no longer takes subscriptions" in answer.text
    assert not status_of(engine, "news", "late@example.org")
