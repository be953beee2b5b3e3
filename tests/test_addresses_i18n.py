"""Internationalised addresses end to end, and intranet (special-use) domains.

`josé@example.org` needs SMTPUTF8 (a non-ASCII local part); `ana@bücher.de` goes out as
`ana@xn--bcher-kva.de` and needs nothing; names stay readable. Real aiosmtpd relays that offer
or withhold SMTPUTF8 (tests/relay_servers.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import re
from collections.abc import Iterator
from email.header import decode_header, make_header
from pathlib import Path

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from mailer.audience.addresses import InvalidAddress, email_key, normalise_email
from mailer.audience.database import deliveries, open_database
from mailer.audience.lists import add_subscriber, create_list
from mailer.audience.subscriber_csv import import_subscribers
from mailer.compose.render import RenderedIssue
from mailer.delivery.message import MessageTemplate, Recipient
from mailer.delivery.send import send_to_list
from mailer.delivery.smtp import DeliveryError, SMTPConnection, SMTPSetupError
from mailer.errors import ConfigError
from mailer.settings import load_settings
from mailer.web.public_web import create_app
from tests.cli_helpers import run_cli
from tests.conftest import ISSUES, ROOT
from tests.relay_servers import Relay, relay_settings

JOSE = "josé@example.org"
ANA = "ana@bücher.de"


@pytest.fixture(params=[True, False], ids=["offers-SMTPUTF8", "withholds-SMTPUTF8"])
def relay(request: pytest.FixtureRequest) -> Iterator[Relay]:
    with Relay(smtputf8=request.param) as server:
        yield server


def parse(data: bytes) -> email.message.EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def head_of(data: bytes) -> bytes:
    return data.partition(b"\r\n\r\n")[0] + b"\r\n"


# --- 1. internationalised addresses -----------------------------------------------------------------


def test_one_address_needing_smtputf8_never_stops_the_others(relay: Relay, tmp_path: Path) -> None:
    """Added one by one, by CSV import, and with `subscribers add`: all reach the send."""
    offers = relay.controller.SMTP_kwargs["enable_SMTPUTF8"]
    settings = relay_settings(relay.port, tmp_path)
    engine = open_database(settings.database_url)
    create_list(engine, "news")
    add_subscriber(engine, "news", JOSE, name="José Álvarez")
    csv_file = tmp_path / "news.csv"
    csv_file.write_text(f"email,name\n{ANA},Ana Müller\nbob@example.org,Bob\n", encoding="utf-8")
    assert (
        import_subscribers(engine, "news", csv_file)
        .lines()[0]
        .endswith("2 added, 0 updated, 0 unchanged, 0 invalid, 0 skipped")
    )
    env = {"MAILER_DATABASE_URL": settings.database_url}
    added = run_cli("subscribers", "add", "news", "Zoë@example.org", "--name", "Zoë", cwd=ROOT, env=env)
    assert added.exit_code == 0, added.output

    summary = asyncio.run(send_to_list(engine, settings, ISSUES / "2016-02.yaml", "news"))

    with engine.connect() as conn:
        rows = dict(conn.execute(sa.select(deliveries.c.email, deliveries.c.status)).all())
        replies = dict(conn.execute(sa.select(deliveries.c.email, deliveries.c.reply)).all())
    engine.dispose()
    received = {m.recipients[0]: m.data for m in relay.recorder.messages}
    needs_utf8 = {JOSE, "Zoë@example.org"}
    if offers:
        assert summary.sent == 4 and set(rows.values()) == {"sent"}
        assert set(received) == {JOSE, "ana@xn--bcher-kva.de", "bob@example.org", "Zoë@example.org"}
        assert head_of(received[JOSE]).startswith(
            "To: =?utf-8?q?Jos=C3=A9_=C3=81lvarez?= <josé@example.org>\r\n".encode()
        )
        assert sum("SMTPUTF8" in options for options in relay.recorder.mail_options) == 2
    else:
        assert (summary.sent, summary.failed_permanent) == (2, 2)
        assert set(received) == {"ana@xn--bcher-kva.de", "bob@example.org"}
        assert {email for email, status in rows.items() if status == "failed"} == needs_utf8
        assert replies[JOSE] == f"the relay does not offer SMTPUTF8, needed for {JOSE}"
    ana = parse(received["ana@xn--bcher-kva.de"])
    assert head_of(received["ana@xn--bcher-kva.de"]).startswith(
        b"To: Ana =?utf-8?q?M=C3=BCller?= <ana@xn--bcher-kva.de>\r\n"
    )
    assert str(ana["To"]) == "Ana Müller <ana@xn--bcher-kva.de>"


def test_the_envelope_uses_a_labels_and_smtputf8_only_when_needed(relay: Relay, tmp_path: Path) -> None:
    offers = relay.controller.SMTP_kwargs["enable_SMTPUTF8"]
    settings = relay_settings(relay.port, tmp_path)

    async def go() -> list[str | DeliveryError]:
        connection = SMTPConnection(settings)
        results: list[str | DeliveryError] = []
        try:
            for recipient in [ANA, JOSE, "bob@example.org"]:
                try:
                    results.append(
                        await connection.send("newsletter@icmpd.org", recipient, b"Subject: x\r\n\r\nhi\r\n")
                    )
                except DeliveryError as error:
                    results.append(error)
        finally:
            await connection.close()
        return results

    ana, jose, bob = asyncio.run(go())
    assert ana == bob == "250 2.0.0 queued"
    if offers:
        assert jose == "250 2.0.0 queued"
        assert relay.recorder.mail_options == [["SIZE=18"], ["SMTPUTF8", "BODY=8BITMIME", "SIZE=18"], ["SIZE=18"]]
    else:
        assert isinstance(jose, DeliveryError) and jose.permanent and not jose.connection_lost
        assert jose.reply == "the relay does not offer SMTPUTF8, needed for josé@example.org"
    assert [m.recipients for m in relay.recorder.messages][0] == ["ana@xn--bcher-kva.de"]


def test_a_sender_needing_smtputf8_on_a_relay_without_it_is_a_setup_error(tmp_path: Path) -> None:
    with Relay(smtputf8=False) as relay:
        settings = relay_settings(relay.port, tmp_path, sender="Zoë <zoë@example.org>")

        async def go() -> None:
            connection = SMTPConnection(settings)
            try:
                await connection.send("zoë@example.org", "bob@example.org", b"Subject: x\r\n\r\nhi\r\n")
            finally:
                await connection.close()

        with pytest.raises(SMTPSetupError, match=r"does not offer SMTPUTF8, needed for the sender zoë@example.org"):
            asyncio.run(go())


def test_names_are_encoded_word_by_word_and_addresses_stay_readable(rendered: dict[str, RenderedIssue]) -> None:
    template = MessageTemplate(
        rendered["2016-02"],
        subject="S",
        sender="Österreich Büro <news@bücher.de>",
        reply_to="Zoë Müller <zoe@example.org>",
    )
    stamp = dt.datetime(2016, 3, 10, tzinfo=dt.UTC)
    data = template.build(Recipient(ANA, "Ana Müller", "https://x.org/u/1"), message_id="<1@x>", date=stamp)
    head = head_of(data)
    assert b"To: Ana =?utf-8?q?M=C3=BCller?= <ana@xn--bcher-kva.de>\r\n" in head
    assert b"From: =?utf-8?q?=C3=96sterreich_B=C3=BCro?= <news@xn--bcher-kva.de>\r\n" in head
    assert b"Reply-To: =?utf-8?q?Zo=C3=AB_M=C3=BCller?= <zoe@example.org>\r\n" in head
    message = parse(data)
    assert str(message["From"]) == "Österreich Büro <news@xn--bcher-kva.de>"
    assert str(message["Reply-To"]) == "Zoë Müller <zoe@example.org>"
    assert template.new_message_id().endswith("@xn--bcher-kva.de>")
    long_name = "Maria da Conceição de Sá Álvares Gonçalves Guimarães Magalhães Albuquerque e Vasconcelos"
    data = template.build(Recipient(JOSE, long_name, "https://x.org/u/1"), message_id="<1@x>", date=stamp)
    to = re.search(rb"(?m)^To:.*\r\n(?:[ \t].*\r\n)*", head_of(data))
    assert to is not None and all(len(line) <= 76 for line in to.group(0).split(b"\r\n"))
    assert to.group(0).endswith(" <josé@example.org>\r\n".encode())
    phrase = to.group(0).decode().removeprefix("To: ").replace("\r\n", "").rsplit(" <", 1)[0]
    assert str(make_header(decode_header(phrase))) == long_name  # RFC 2047 6.2 decoding


def test_the_web_subscribe_form_takes_an_internationalised_address(tmp_path: Path) -> None:
    with Relay(smtputf8=True) as relay:
        settings = relay_settings(relay.port, tmp_path, public_url="http://testserver", issues_dir=ISSUES)
        engine = open_database(settings.database_url)
        create_list(engine, "news", "ICMPD Monthly Update", public=True)
        with TestClient(create_app(settings, engine), base_url="http://testserver") as browser:
            page = browser.get("/subscribe/news")
            token = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert token is not None, page.text
            answer = browser.post(
                "/subscribe/news", data={"csrf": token.group(1), "email": "josé@bücher.de", "name": "José Müller"}
            )
        engine.dispose()
        assert answer.status_code == 200 and "Check your inbox" in answer.text
        [mail] = relay.recorder.wait_for(1)
    assert mail.recipients == ["josé@xn--bcher-kva.de"]
    assert head_of(mail.data).startswith(
        "From: ICMPD Newsletter <newsletter@icmpd.org>\r\nTo: =?utf-8?q?Jos=C3=A9_M=C3=BCller?= "
        "<josé@xn--bcher-kva.de>\r\n".encode()
    )


# --- 6. special-use domains -------------------------------------------------------------------------


def test_special_use_domains_are_refused_unless_accepted() -> None:
    with pytest.raises(InvalidAddress) as refused:
        normalise_email("Ana@Intranet.TEST")
    assert str(refused.value) == "intranet.test is a special-use domain; add 'test' to special_use_domains to accept it"
    assert normalise_email("Ana@Intranet.TEST", special_use_domains=["test"]) == (
        "Ana@intranet.test",
        "ana@intranet.test",
    )
    assert normalise_email("josé@Bücher.corp.local", special_use_domains=["corp.local"]) == (
        "josé@bücher.corp.local",
        "josé@bücher.corp.local",
    )
    with pytest.raises(InvalidAddress, match="add 'local' to special_use_domains"):
        normalise_email("ana@other.local", special_use_domains=["corp.local"])
    with pytest.raises(InvalidAddress, match="two periods"):
        normalise_email("ana..b@intranet.test", special_use_domains=["test"])
    # the key does not depend on what is accepted: lookups find the row whatever the setting
    assert email_key("ANA@intranet.test") == "ana@intranet.test"


def test_a_special_use_sender_is_refused_with_the_setting_to_change_then_accepted(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(ROOT / "mailer.toml", sender="News <news@intranet.test>")
    assert str(refused.value).endswith(
        "sender: 'news@intranet.test' is not a valid email address: intranet.test is a special-use domain; "
        "add 'test' to special_use_domains to accept it"
    )
    settings = load_settings(
        ROOT / "mailer.toml",
        sender="News <news@intranet.test>",
        reply_to="help@desk.intranet.test",
        special_use_domains=[".Test"],
    )
    assert settings.special_use_domains == ["test"]
    env = {
        "MAILER_DATABASE_URL": f"sqlite:///{tmp_path / 'mailer.sqlite3'}",
        "MAILER_SENDER": "News <news@intranet.test>",
        "MAILER_SPECIAL_USE_DOMAINS": '["test"]',
    }
    created = run_cli("lists", "create", "staff", cwd=ROOT, env=env)
    assert created.exit_code == 0, created.output


def test_special_use_domains_must_be_domain_names() -> None:
    with pytest.raises(ConfigError, match=r"special_use_domains: 'intra net' is not a domain name"):
        load_settings(ROOT / "mailer.toml", special_use_domains=["intra net"])
