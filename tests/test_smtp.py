"""The DATA seam around aiosmtplib: whatever bytes go in, the server receives them intact."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import SecretStr

from mailer.delivery.smtp import SMTPConnection, SMTPSetupError
from mailer.delivery.wire import canonical, is_canonical
from mailer.settings import Settings
from tests.smtp_server import SMTPServer


def deliver(settings: Settings, data: bytes, recipient: str = "ana@example.org") -> str:
    async def go() -> str:
        connection = SMTPConnection(settings)
        try:
            return await connection.send("news@icmpd.org", recipient, data)
        finally:
            await connection.close()

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"Subject: x\n\nbare\nline feeds\n", b"Subject: x\r\n\r\nbare\r\nline feeds\r\n"),
        (
            b"Subject: x\r\n\r\n.starts with a dot\r\n..two dots\r\n.\r\nend",
            b"Subject: x\r\n\r\n.starts with a dot\r\n..two dots\r\n.\r\nend\r\n",
        ),
        (b"Subject: x\r\n\r\n" + b"a" * 998 + b"\r\n", b"Subject: x\r\n\r\n" + b"a" * 998 + b"\r\n"),
        (b"Subject: x\r\rlone\rreturns", b"Subject: x\r\n\r\nlone\r\nreturns\r\n"),
    ],
    ids=["bare-lf", "leading-dots", "998-octets", "lone-cr"],
)
def test_messages_arrive_intact(send_settings: Settings, smtp_server: SMTPServer, raw: bytes, expected: bytes) -> None:
    assert deliver(send_settings, raw).startswith("250")
    [item] = smtp_server.recorder.messages
    assert item.data == expected


def test_canonical_form() -> None:
    assert is_canonical(b"a\r\nb\r\n") and not is_canonical(b"a\nb\r\n") and not is_canonical(b"a\r\n.b\r\n")
    assert canonical(b".a\n.b") == b"..a\r\n..b\r\n"
    assert canonical(b"x\r.y\n") == b"x\r\n..y\r\n"


def test_unknown_host_is_one_clear_line(send_settings: Settings) -> None:
    settings = send_settings.model_copy(update={"smtp_host": "no-such-host.invalid", "smtp_tls": "starttls"})
    with pytest.raises(
        SMTPSetupError,
        match=r"^SMTP server no-such-host.invalid:\d+: unknown host 'no-such-host.invalid'; check smtp_host$",
    ):
        deliver(settings, b"Subject: x\r\n\r\nhi\r\n")


def test_starttls_refused_by_a_server_without_it(send_settings: Settings) -> None:
    settings = send_settings.model_copy(update={"smtp_tls": "starttls"})
    with pytest.raises(SMTPSetupError, match=r"^SMTP server 127.0.0.1:\d+: .*STARTTLS"):
        deliver(settings, b"Subject: x\r\n\r\nhi\r\n")


def test_refused_login_names_the_server_and_user(send_settings: Settings) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    from tests.smtp_server import Recorder, free_port

    port = free_port()
    controller = Controller(
        Recorder(),
        hostname="127.0.0.1",
        port=port,
        authenticator=lambda *args: AuthResult(success=False, handled=False),
        auth_require_tls=False,
    )
    controller.start()
    try:
        settings = send_settings.model_copy(
            update={"smtp_port": port, "smtp_username": "news", "smtp_password": SecretStr("wrong-password")}
        )
        with pytest.raises(SMTPSetupError) as caught:
            deliver(settings, b"Subject: x\r\n\r\nhi\r\n")
    finally:
        controller.stop()
    assert str(caught.value).startswith(f"SMTP server 127.0.0.1:{port} refused the login for 'news': 535")
    assert "wrong-password" not in str(caught.value)


def test_template_messages_are_canonical_by_construction(rendered) -> None:  # type: ignore[no-untyped-def]
    import datetime as dt

    from mailer.delivery.message import MessageTemplate, Recipient

    template = MessageTemplate(rendered["2015-10"], subject="S", sender="news@icmpd.org")
    data = template.build(
        Recipient(".dot@example.org", ".Dot\\nName", "https://x.org/u/1"),
        message_id="<1@x>",
        date=dt.datetime.now(dt.UTC),
    )
    plain = bytes(data)
    crlf = plain.count(b"\r\n")
    assert plain.count(b"\n") == crlf == plain.count(b"\r") and b"\r\n." not in plain and plain.endswith(b"\r\n")
    assert max(len(line) for line in plain.split(b"\r\n")) <= 998
