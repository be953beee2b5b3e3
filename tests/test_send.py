"""Sending to a real SMTP server on 127.0.0.1 with the real ledger (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import email
import re
import time
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mailer.audience.database import deliveries, open_database
from mailer.audience.lists import add_subscriber, create_list, mailable_subscribers, unsubscribe
from mailer.delivery.delivery_status import delivery_status
from mailer.delivery.send import SendSummary, send_to_list
from mailer.delivery.unsubscribe import read_token
from mailer.errors import MailerError
from mailer.settings import Settings
from tests.conftest import ISSUES, MINIMAL, SECRET
from tests.smtp_server import SMTPServer

ISSUE = ISSUES / "2016-02.yaml"


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


@pytest.fixture
def staff(send_settings: Settings) -> Engine:
    engine = open_database(send_settings.database_url)
    create_list(engine, "staff", "All staff")
    for i, name in enumerate(["Ana Alves", "Bob", "Çelik Ünal", "Dora", "Eve"]):
        add_subscriber(engine, "staff", f"person{i}@example.org", name=name)
    return engine


def send(engine: Engine, settings: Settings, issue: Path = ISSUE, **options: object):  # type: ignore[no-untyped-def]
    return asyncio.run(send_to_list(engine, settings, issue, "staff", **options))


def test_each_recipient_gets_one_personal_standards_compliant_message(
    staff: Engine, send_settings: Settings, smtp_server: SMTPServer
) -> None:
    summary = send(staff, send_settings)
    assert (summary.sent, summary.failed_permanent, summary.failed_temporary) == (5, 0, 0)
    received = smtp_server.recorder.messages
    assert sorted(r for m in received for r in m.recipients) == [f"person{i}@example.org" for i in range(5)]
    message_ids = set()
    for item in received:
        [recipient] = item.recipients
        raw = item.data
        assert b"\n" not in raw.replace(b"\r\n", b"")
        body = raw.split(b"\r\n\r\n", 1)[1]
        assert max(len(line) for line in body.split(b"\r\n")) <= 76
        message = parse(raw)
        assert message["To"].addresses[0].addr_spec == recipient
        assert message["From"] == "ICMPD Newsletter <newsletter@icmpd.org>"
        assert message["Subject"] == "February 2016 Monthly Update"
        assert re.search(r"[+-]\d{4}$", message["Date"])
        assert message["Message-ID"].endswith("@icmpd.org>")
        message_ids.add(message["Message-ID"])
        assert message["List-Id"] == "staff <staff.newsletter.icmpd.org>"
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        unsubscribe = re.fullmatch(
            r"<(https://newsletter\.icmpd\.org/unsubscribe/([^>]+))>", message["List-Unsubscribe"]
        )
        assert unsubscribe
        assert read_token(SECRET, unsubscribe.group(2)).issue == "2016-02", (
            "the link counts an unsubscribe against its issue"
        )
        assert message.get_content_type() == "multipart/alternative"
        text, html = message.iter_parts()
        assert (text.get_content_type(), html.get_content_type()) == ("text/plain", "text/html")
        for part in (text, html):
            assert part["Content-Transfer-Encoding"] == "quoted-printable" and part.get_content_charset() == "utf-8"
        assert f"This email was sent to {recipient}." in text.get_content()
        assert f"Unsubscribe: {unsubscribe.group(1)}" in text.get_content()
        assert f'href="{unsubscribe.group(1)}"' in html.get_content()
        assert "{{" not in text.get_content() + html.get_content()
    assert len(message_ids) == 5
    assert delivery_status(staff, "2016-02", "staff").lines() == [
        "2016-02 to 'staff': 5 sent, 0 pending, 0 failed, 0 skipped"
    ]


def test_names_cannot_inject_headers(send_settings: Settings, smtp_server: SMTPServer) -> None:
    """Every entry point cleans control characters out of names; a name stored before that still cannot add headers."""
    from mailer.audience.database import subscribers

    engine = open_database(send_settings.database_url)
    create_list(engine, "staff")
    add_subscriber(engine, "staff", "ana@example.org", name="Ana\r\nBcc: victim@example.org")
    assert [s.name for s in mailable_subscribers(engine, "staff")] == ["Ana Bcc: victim@example.org"]
    with engine.begin() as conn:
        conn.execute(sa.update(subscribers).values(name="Ana\r\nBcc: victim@example.org"))
    send(engine, send_settings)
    [item] = smtp_server.recorder.messages
    message = parse(item.data)
    assert message["Bcc"] is None and item.recipients == ["ana@example.org"]
    assert message["To"] == '"Ana Bcc: victim@example.org" <ana@example.org>'


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # PostgreSQL enforces the column's 300 anyway
def test_a_recipient_whose_message_cannot_be_made_fails_alone(
    staff: Engine, send_settings: Settings, smtp_server: SMTPServer
) -> None:
    """An address stored without today's checks makes a To header no relay takes: that row fails, no other."""
    from mailer.audience.database import deliveries, subscribers

    huge = "p" * 1000 + "@example.org"
    with staff.begin() as conn:
        conn.execute(sa.update(subscribers).where(subscribers.c.email == "person2@example.org").values(email=huge))
    summary = send(staff, send_settings)
    assert (summary.sent, summary.failed_permanent) == (4, 1)
    assert huge not in smtp_server.recorder.delivered()
    with staff.connect() as conn:
        reply = conn.execute(sa.select(deliveries.c.reply).where(deliveries.c.email == huge)).scalar_one()
    assert reply.startswith("cannot make this recipient's message: To header")


def test_sending_again_sends_nothing_and_suppressed_are_skipped(
    staff: Engine, send_settings: Settings, smtp_server: SMTPServer
) -> None:
    unsubscribe(staff, "person4@example.org")
    first = send(staff, send_settings)
    assert (first.sent, first.skipped) == (4, 0)
    again = send(staff, send_settings)
    assert again.sent == 0
    assert len(smtp_server.recorder.messages) == 4
    add_subscriber(staff, "staff", "late@example.org")
    unsubscribe(staff, "person3@example.org")
    assert send(staff, send_settings).sent == 1
    assert smtp_server.recorder.delivered()["late@example.org"] == 1


def test_temporary_failures_are_retried_and_permanent_ones_recorded_once(
    send_settings: Settings, smtp_server: SMTPServer
) -> None:
    engine = open_database(send_settings.database_url)
    create_list(engine, "staff")
    for address in [
        "ok@example.org",
        "temp-2@example.org",
        "perm@example.org",
        "drop@example.org",
        "bye@example.org",
        "temp-6@example.org",
    ]:
        add_subscriber(engine, "staff", address)
    summary = send(engine, send_settings.model_copy(update={"max_attempts": 4}))
    delivered = smtp_server.recorder.delivered()
    assert delivered == {"ok@example.org": 1, "temp-2@example.org": 1, "bye@example.org": 1}
    attempts = smtp_server.recorder.attempts
    assert (
        attempts["drop@example.org"] == 1  # the whole message was written and no reply came: held, never resent
        and attempts["perm@example.org"] == 1
        and attempts["temp-2@example.org"] == 3
        and attempts["temp-6@example.org"] == 4
    )
    assert (summary.sent, summary.failed_permanent, summary.failed_temporary, summary.held) == (3, 1, 1, 1)
    head, permanent, temporary, held = delivery_status(engine, "2016-02", "staff").lines()
    assert (head, permanent, temporary) == (
        "2016-02 to 'staff': 3 sent, 0 pending, 2 failed, 1 uncertain, 0 skipped",
        "  failed (permanent): perm@example.org: 554 5.7.1 message refused",
        "  failed (temporary): temp-6@example.org: 451 4.3.0 try again later",
    )
    assert re.fullmatch(
        r"  uncertain \(not resent\): drop@example.org: 127.0.0.1:\d+: no reply after the end of data \(.+\); "
        r"the message may have been delivered; --retry-uncertain sends it again",
        held,
    )
    retried = send(engine, send_settings, retry_failed=True)
    assert (retried.sent, retried.failed_permanent) == (1, 0)
    assert smtp_server.recorder.attempts["perm@example.org"] == 1
    assert smtp_server.recorder.delivered()["temp-6@example.org"] == 1
    assert smtp_server.recorder.attempts["temp-6@example.org"] == 7


def test_a_broken_issue_mails_nobody(
    staff: Engine, send_settings: Settings, smtp_server: SMTPServer, tmp_path: Path
) -> None:
    broken = tmp_path / "2016-03.yaml"
    broken.write_text(MINIMAL.replace("title: A story", "titel: A story"))
    with pytest.raises(MailerError):
        send(staff, send_settings, issue=broken)
    assert smtp_server.recorder.attempts == {}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the limiter is the pool's, whatever the ledger
def test_rate_limit_is_respected(staff: Engine, send_settings: Settings, smtp_server: SMTPServer) -> None:
    for i in range(7):
        add_subscriber(staff, "staff", f"more{i}@example.org")
    summary = send(staff, send_settings.model_copy(update={"rate_per_second": 4.0}))
    times = sorted(m.at for m in smtp_server.recorder.messages)
    assert len(times) == 12
    # a bucket of 4 tokens refilled at 4/s: no 1-second window holds more than 4 + 4 messages,
    # and 12 messages cannot all be let through before (12 - 4) / 4 = 2 s have passed
    assert all(sum(1 for t in times if start <= t < start + 1) <= 8 for start in times)
    assert summary.seconds >= 2.0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sqlite_refuses_a_second_sender_for_the_same_issue_and_list(staff: Engine, send_settings: Settings) -> None:
    """PostgreSQL senders share the work instead: test_two_postgres_senders_share_the_work."""
    from mailer.delivery.ledger import Ledger

    first = Ledger(staff, "2016-02", "staff")
    try:
        with pytest.raises(MailerError, match=r"another mailer send of 2016-02 to 'staff' is running"):
            Ledger(staff, "2016-02", "staff")
    finally:
        first.close()


def claimants(engine: Engine) -> set[str]:
    """The senders that have claimed rows of the ledger so far."""
    query = sa.select(deliveries.c.claimed_by).distinct().where(deliveries.c.claimed_by != "")
    with engine.connect() as connection:
        return set(connection.execute(query).scalars())


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_postgres_senders_share_the_work(staff: Engine, send_settings: Settings, smtp_server: SMTPServer) -> None:
    recipients = [f"person{i}@example.org" for i in range(5)] + [f"p{i:03d}@example.org" for i in range(35)]
    for address in recipients[5:]:
        add_subscriber(staff, "staff", address)
    smtp_server.recorder.delay = 0.5  # slow until both have claimed rows: alone, one sender needs 40 x 0.5 / 4 s

    async def full_speed_once_both_claimed() -> set[str]:
        deadline = time.monotonic() + 30
        while len(found := await asyncio.to_thread(claimants, staff)) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        smtp_server.recorder.delay = 0
        return found

    async def two_senders() -> tuple[SendSummary, SendSummary, set[str]]:
        return await asyncio.gather(
            send_to_list(staff, send_settings, ISSUE, "staff"),
            send_to_list(staff, send_settings, ISSUE, "staff"),
            full_speed_once_both_claimed(),
        )

    first, second, seen = asyncio.run(two_senders())
    assert len(seen) == 2, f"both senders should have claimed rows; claimants: {seen}"
    assert smtp_server.recorder.delivered() == dict.fromkeys(recipients, 1)
    assert first.sent > 0 and second.sent > 0 and first.sent + second.sent == 40
    assert delivery_status(staff, "2016-02", "staff").lines() == [
        "2016-02 to 'staff': 40 sent, 0 pending, 0 failed, 0 skipped"
    ]


def test_dkim_signature_covers_list_unsubscribe_and_verifies(
    staff: Engine, send_settings: Settings, smtp_server: SMTPServer, dkim_key: tuple[Path, bytes]
) -> None:
    import dkim

    key_file, record = dkim_key
    send(staff, send_settings.model_copy(update={"dkim_key_file": key_file, "dkim_selector": "news2016"}))
    for item in smtp_server.recorder.messages:
        signature = parse(item.data)["DKIM-Signature"]
        assert "d=icmpd.org" in signature and "s=news2016" in signature
        signed = set(re.search(r"h=([^;]+)", "".join(signature.split())).group(1).lower().split(":"))  # type: ignore[union-attr]
        assert {"from", "to", "subject", "list-unsubscribe", "list-unsubscribe-post"} <= signed
        assert dkim.verify(
            item.data, dnsfunc=lambda name, timeout=5: record if name == b"news2016._domainkey.icmpd.org." else None
        )


def test_an_issue_whose_name_cannot_be_a_web_address_is_refused_in_one_line(
    staff: Engine, send_settings: Settings, tmp_path: Path
) -> None:
    long_name = tmp_path / f"{'a' * 240}.yaml"
    long_name.write_bytes(ISSUE.read_bytes())
    with pytest.raises(MailerError, match=r"cannot be a web address; name issue files with at most 100 letters"):
        send(staff, send_settings, long_name)
