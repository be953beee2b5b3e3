"""A relay's refusal is the session's or the recipient's; a lost reply after the end of data is uncertain;
private CAs, unverified TLS and the EHLO name. Real aiosmtpd relays on 127.0.0.1 (tests/relay_servers.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from mailer.audience.database import deliveries, open_database
from mailer.audience.lists import add_subscriber, create_list
from mailer.delivery.send import send_to_list
from mailer.delivery.smtp import DeliveryError, SMTPConnection, SMTPSetupError, helo_warning, tls_warning
from mailer.settings import Settings
from tests.conftest import ISSUES
from tests.relay_servers import CertificateAuthority, Relay, make_ca, relay_settings

MESSAGE = b"Subject: x\r\n\r\nhi\r\n"
SENDER = "newsletter@icmpd.org"


def deliver(settings: Settings, *recipients: str) -> list[str | BaseException]:
    """Send MESSAGE to each recipient on one connection; each result is the reply or the error."""

    async def go() -> list[str | BaseException]:
        connection = SMTPConnection(settings)
        results: list[str | BaseException] = []
        try:
            for recipient in recipients:
                try:
                    results.append(await connection.send(SENDER, recipient, MESSAGE))
                except (DeliveryError, SMTPSetupError) as error:
                    results.append(error)
        finally:
            await connection.close()
        return results

    return asyncio.run(go())


@pytest.fixture
def relay() -> Iterator[Relay]:
    with Relay() as server:
        yield server


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    folder = tmp_path / "ca"
    folder.mkdir()
    return make_ca(folder)


# --- 2. whole-server refusals stop the send; a recipient's refusal is that recipient's -------------


def test_530_on_mail_from_is_a_setup_error_naming_the_setting(relay: Relay, tmp_path: Path) -> None:
    relay.recorder.mail_reply = "530 5.7.0 Authentication required"
    [error] = deliver(relay_settings(relay.port, tmp_path), "ana@example.org")
    assert isinstance(error, SMTPSetupError)
    assert str(error) == (
        f"SMTP server 127.0.0.1:{relay.port} refused the sender {SENDER}: 530 5.7.0 Authentication required; "
        "set smtp_username and smtp_password"
    )


def test_a_refused_sender_stops_the_send_and_leaves_every_row_pending(relay: Relay, tmp_path: Path) -> None:
    settings = relay_settings(relay.port, tmp_path)
    engine = open_database(settings.database_url)
    create_list(engine, "staff")
    for n in range(20):
        add_subscriber(engine, "staff", f"person{n}@example.org")
    relay.recorder.mail_reply = "553 5.7.1 <newsletter@icmpd.org>: Sender address rejected: not owned by user"
    with pytest.raises(SMTPSetupError, match=r"refused the sender newsletter@icmpd.org: 553 5.7.1 .*; check sender"):
        asyncio.run(send_to_list(engine, settings, ISSUES / "2016-02.yaml", "staff"))
    with engine.connect() as conn:
        statuses = conn.execute(sa.select(deliveries.c.status, sa.func.count()).group_by(deliveries.c.status)).all()
    engine.dispose()
    assert dict(statuses) == {"pending": 20}


def test_a_greeting_refusal_is_a_setup_error(tmp_path: Path) -> None:
    async def go() -> BaseException:
        async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"554 5.7.1 mail.example.org: no SMTP service for you\r\n")
            await writer.drain()
            await reader.read()
            writer.close()

        server = await asyncio.start_server(greet, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        connection = SMTPConnection(relay_settings(port, tmp_path))
        try:
            await connection.send(SENDER, "ana@example.org", MESSAGE)
        except SMTPSetupError as error:
            return error
        finally:
            await connection.close()
            server.close()
        raise AssertionError("sent")

    error = asyncio.run(go())
    assert str(error).startswith("SMTP server 127.0.0.1:") and "refused the connection: 554 5.7.1" in str(error)


@pytest.mark.parametrize(
    ("reply", "permanent"),
    [("550 5.1.1 <x>: Recipient address rejected: User unknown", True), ("450 4.2.0 mailbox busy", False)],
)
def test_a_recipient_refusal_is_that_recipients_failure_and_the_session_goes_on(
    relay: Relay, tmp_path: Path, reply: str, permanent: bool
) -> None:
    relay.recorder.rcpt_reply = reply
    settings = relay_settings(relay.port, tmp_path)
    [first] = deliver(settings, "nobody@example.org")
    assert isinstance(first, DeliveryError) and not isinstance(first, SMTPSetupError)
    assert (first.reply, first.permanent, first.connection_lost) == (reply, permanent, False)
    relay.recorder.rcpt_reply = None
    assert deliver(settings, "ana@example.org") == ["250 2.0.0 queued"]


def test_a_temporary_mail_from_refusal_is_temporary(relay: Relay, tmp_path: Path) -> None:
    relay.recorder.mail_reply = "451 4.3.0 try again later"
    [error] = deliver(relay_settings(relay.port, tmp_path), "ana@example.org")
    assert isinstance(error, DeliveryError) and not error.permanent and error.code == 451


# --- 3. a lost or late reply after the end of data is uncertain; before it, a plain lost connection ----


@pytest.mark.parametrize("recipient", ["lost@example.org", "late@example.org"])
def test_no_reply_after_the_end_of_data_is_uncertain(relay: Relay, tmp_path: Path, recipient: str) -> None:
    settings = relay_settings(relay.port, tmp_path, smtp_timeout=0.5)
    [error, after] = deliver(settings, recipient, "ana@example.org")
    assert isinstance(error, DeliveryError)
    assert (error.uncertain, error.connection_lost, error.permanent) == (True, True, False)
    assert "no reply after the end of data" in error.reply
    assert after == "250 2.0.0 queued"  # a fresh connection for the next recipient
    assert relay.recorder.attempts[recipient] == 1


def test_a_drop_before_the_end_of_data_is_not_uncertain(relay: Relay, tmp_path: Path) -> None:
    [error] = deliver(relay_settings(relay.port, tmp_path), "gone@example.org")
    assert isinstance(error, DeliveryError)
    assert (error.connection_lost, error.uncertain) == (True, False)


def test_uncertain_deliveries_are_held_not_resent(relay: Relay, tmp_path: Path) -> None:
    settings = relay_settings(relay.port, tmp_path, smtp_timeout=0.5)
    engine = open_database(settings.database_url)
    create_list(engine, "staff")
    for address in ["ana@example.org", "lost@example.org", "bob@example.org"]:
        add_subscriber(engine, "staff", address)
    asyncio.run(send_to_list(engine, settings, ISSUES / "2016-02.yaml", "staff"))
    engine.dispose()
    assert relay.recorder.delivered() == {"ana@example.org": 1, "lost@example.org": 1, "bob@example.org": 1}


# --- 4. private CA, unverified TLS ---------------------------------------------------------------


@pytest.mark.parametrize("mode", ["starttls", "tls"])
def test_a_relay_with_a_private_ca_needs_smtp_ca_file(ca: CertificateAuthority, tmp_path: Path, mode: str) -> None:
    with Relay(ca=ca, implicit_tls=mode == "tls") as relay:
        settings = relay_settings(relay.port, tmp_path, smtp_host="127.0.0.1", smtp_tls=mode)
        [refused] = deliver(settings, "ana@example.org")
        trusted = deliver(settings.model_copy(update={"smtp_ca_file": ca.ca_file}), "ana@example.org")
    assert isinstance(refused, SMTPSetupError)
    assert str(refused) == (
        f"SMTP server 127.0.0.1:{relay.port}: TLS certificate not accepted "
        "(unable to get local issuer certificate); set smtp_ca_file to the CA bundle that signed it "
        "(or, for a test relay only, smtp_tls_verify = false)"
    )
    assert trusted == ["250 2.0.0 queued"]
    assert tls_warning(settings) is None


def test_smtp_tls_verify_false_works_and_warns(
    ca: CertificateAuthority, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Relay(ca=ca) as relay:
        settings = relay_settings(relay.port, tmp_path, smtp_tls="starttls", smtp_tls_verify=False)
        with caplog.at_level(logging.WARNING, logger="mailer.delivery.smtp"):
            assert deliver(settings, "ana@example.org") == ["250 2.0.0 queued"]
    assert any("smtp_tls_verify = false" in record.getMessage() for record in caplog.records), caplog.text
    warning = tls_warning(settings)
    assert warning is not None and warning.startswith("warning: smtp_tls_verify = false: the certificate of 127.0.0.1")


def test_an_unreadable_ca_file_is_one_line(ca: CertificateAuthority, tmp_path: Path) -> None:
    not_pem = tmp_path / "not-a-ca.pem"
    not_pem.write_text("hello\n", encoding="utf-8")
    with Relay(ca=ca) as relay:
        settings = relay_settings(relay.port, tmp_path, smtp_tls="starttls", smtp_ca_file=not_pem)
        [error] = deliver(settings, "ana@example.org")
    assert isinstance(error, SMTPSetupError) and str(error).startswith(f"smtp_ca_file {not_pem}: cannot load it")


# --- 5. the EHLO name ------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["at EHLO", "at RCPT (Postfix, smtpd_delay_reject)"])
def test_a_refused_non_fqdn_ehlo_is_a_setup_error_naming_smtp_helo_name(
    relay: Relay, tmp_path: Path, where: str
) -> None:
    relay.recorder.fqdn_helo_only = True
    relay.recorder.helo_check_at_rcpt = where.startswith("at RCPT")
    [error] = deliver(relay_settings(relay.port, tmp_path, smtp_helo_name="mailer"), "ana@example.org")
    assert isinstance(error, SMTPSetupError), error
    assert "504 5.5.2 <mailer>: Helo command rejected" in str(error)
    assert str(error).endswith("set smtp_helo_name to this host's fully-qualified domain name, e.g. mail.example.org")
    assert deliver(relay_settings(relay.port, tmp_path), "ana@example.org") == ["250 2.0.0 queued"]
    assert relay.recorder.ehlo_names[-1] == "mailer.example.org"


def test_helo_warning_names_a_name_that_is_not_fully_qualified(tmp_path: Path) -> None:
    assert helo_warning(relay_settings(25, tmp_path)) is None
    for name in ["localhost", "mailer"]:
        warning = helo_warning(relay_settings(25, tmp_path, smtp_helo_name=name))
        assert warning is not None and f"{name!r} (smtp_helo_name) is not a fully-qualified domain name" in warning
