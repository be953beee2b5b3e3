"""The DATA seam around aiosmtplib: whatever bytes go in, the server receives them intact, the wire
carries what aiosmtplib's own SMTP.data() would write, and a server going mid-DATA closes the connection."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib.metadata
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as AiosmtpdSMTP
from aiosmtplib import SMTPResponse, SMTPStatus
from pydantic import SecretStr

from mailer.delivery.smtp import DeliveryError, SMTPConnection, SMTPSetupError, _data
from mailer.delivery.wire import WireBytes, canonical, is_canonical
from mailer.settings import Settings
from tests.smtp_server import Recorder, SMTPServer, free_port


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
    from aiosmtpd.smtp import AuthResult

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


# --- the DATA seam: aiosmtplib's internals, the bytes on the wire, the connection when the server goes ----

SEAM = "mailer.delivery.smtp._data"


def seam_changed(detail: str) -> str:
    version = importlib.metadata.version("aiosmtplib")
    return (
        f"aiosmtplib internals used by {SEAM} changed (aiosmtplib {version}): {detail}. "
        "Re-check the DATA seam against aiosmtplib's SMTP.data() / SMTPProtocol.execute_data_command "
        "before widening the pin in pyproject.toml"
    )


class ScriptedSMTP(AiosmtpdSMTP):
    """aiosmtpd's server session, recording every byte it receives, and failing at DATA on request."""

    def __init__(self, server: ScriptedServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scripted = server
        self.wire = bytearray()

    def data_received(self, data: bytes) -> None:
        if not self.wire:  # a session is a connection that sent something (not Controller's start-up probe)
            self.scripted.sessions.append(self.wire)
        self.wire.extend(data)
        super().data_received(data)

    async def smtp_DATA(self, arg: str) -> None:
        fault = self.scripted.faults.pop(0) if self.scripted.faults else None
        if fault is None:
            await super().smtp_DATA(arg)
            return
        assert self.transport is not None
        if fault == "drop-at-data":  # closes instead of answering DATA
            self.transport.close()
            return
        if fault == "silent-at-data":  # never answers DATA; cancelled when the client goes
            await asyncio.Event().wait()
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        if fault == "drop-in-body":  # reads two lines of the message, then closes
            await self._reader.readuntil(b"\r\n")
            await self._reader.readuntil(b"\r\n")
            self.transport.close()
            return
        assert fault == "silent-after-body", fault  # reads the whole message, never answers it
        while await self._reader.readuntil(b"\r\n") != b".\r\n":
            pass
        await asyncio.Event().wait()


class ScriptedServer:
    """aiosmtpd on 127.0.0.1; `faults` are used up one per DATA command, in order."""

    def __init__(self, *faults: str, pipelining: bool = True) -> None:
        self.faults = list(faults)
        self.sessions: list[bytearray] = []
        self.recorder = Recorder(pipelining=pipelining)
        self.port = free_port()
        server = self

        class ScriptedController(Controller):
            def factory(self) -> ScriptedSMTP:
                return ScriptedSMTP(server, self.handler, **self.SMTP_kwargs)

        self.controller = ScriptedController(self.recorder, hostname="127.0.0.1", port=self.port, decode_data=False)

    def __enter__(self) -> ScriptedServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

    def data_section(self, session: int) -> bytes:
        """What the client wrote from its DATA command on, in one session."""
        wire = bytes(self.sessions[session])
        return wire[wire.index(b"DATA\r\n") :]


DataWay = Callable[[aiosmtplib.SMTP, bytes], Awaitable[SMTPResponse]]


async def mailer_data(smtp: aiosmtplib.SMTP, data: bytes) -> SMTPResponse:
    return await _data(smtp, data, TIMEOUT)


async def aiosmtplib_data(smtp: aiosmtplib.SMTP, data: bytes) -> SMTPResponse:
    return await smtp.data(data, timeout=TIMEOUT)


WAYS = pytest.mark.parametrize("way", [mailer_data, aiosmtplib_data], ids=["mailer-_data", "aiosmtplib-SMTP.data"])
TIMEOUT = 0.5


async def connected(port: int) -> aiosmtplib.SMTP:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, local_hostname="client.test", timeout=5)
    await smtp.connect()
    return smtp


async def envelope(smtp: aiosmtplib.SMTP, recipient: str = "ana@example.org") -> None:
    await smtp.mail("news@icmpd.org")
    await smtp.rcpt(recipient)


async def ready_for_data(port: int) -> tuple[aiosmtplib.SMTP, asyncio.Lock]:
    """A connection with MAIL and RCPT done, and the protocol lock _data takes."""
    smtp = await connected(port)
    await envelope(smtp)
    protocol = smtp.protocol
    assert protocol is not None and protocol._command_lock is not None
    return smtp, protocol._command_lock


def test_aiosmtplib_internals_used_by_the_data_seam() -> None:
    """A tripwire: the private parts of aiosmtplib's SMTPProtocol that _data relies on, after a real connect."""
    from aiosmtplib.protocol import SMTPProtocol

    for name, parameters in {"read_response": ["self", "timeout"], "write": ["self", "data"]}.items():
        method = getattr(SMTPProtocol, name, None)
        assert method is not None, seam_changed(f"SMTPProtocol.{name} is gone")
        found = list(inspect.signature(method).parameters)
        assert found == parameters, seam_changed(
            f"SMTPProtocol.{name}{inspect.signature(method)}, expected {parameters}"
        )
    assert inspect.iscoroutinefunction(SMTPProtocol.read_response), seam_changed("read_response is not async")
    assert (SMTPStatus.start_input, SMTPStatus.completed) == (354, 250), seam_changed("SMTPStatus codes")

    async def go() -> None:
        with SMTPServer() as server:
            smtp = await connected(server.port)
            protocol = smtp.protocol
            assert isinstance(protocol, SMTPProtocol), seam_changed(f"SMTP.protocol is {type(protocol)!r}")
            assert isinstance(getattr(protocol, "_command_lock", None), asyncio.Lock), seam_changed(
                "SMTPProtocol._command_lock is not an asyncio.Lock after connect"
            )
            assert getattr(protocol, "_response_pending", None) is False, seam_changed(
                "SMTPProtocol._response_pending is not False between commands"
            )
            # what _response_pending means: a reply is taken only while it is True
            protocol.data_received(b"250 unsolicited\r\n")
            protocol._response_pending = True
            protocol.data_received(b"250 expected\r\n")
            reply = await protocol.read_response(timeout=1)
            assert reply == (250, "expected"), seam_changed(
                f"read_response gave {reply!r}: SMTPProtocol no longer drops data while _response_pending is False"
            )
            assert protocol._response_pending is False, seam_changed("read_response does not reset _response_pending")
            await envelope(smtp)  # the session is still in step
            assert (await _data(smtp, b"Subject: x\r\n\r\nhi\r\n", 5)).code == 250
            await smtp.quit()
            assert smtp.protocol is None and not smtp.is_connected, seam_changed("SMTP.close() keeps the protocol")

    asyncio.run(go())


def message_2016_02(rendered: dict[str, Any]) -> bytes:
    from mailer.delivery.message import MessageTemplate, Recipient

    template = MessageTemplate(rendered["2016-02"], subject="S", sender="news@icmpd.org")
    person = Recipient("ana@example.org", "Ana", "https://newsletter.icmpd.org/u/1")
    return template.build(person, message_id="<1@x>", date=dt.datetime(2016, 3, 10, tzinfo=dt.UTC))


NOT_CANONICAL = {
    "bare-lf": b"Subject: x\n\nbare\nline feeds\n",
    "leading-dots": b".Subject: x\r\n\r\n.one\r\n..two\r\n.\r\n.",
    "lone-cr": b"Subject: x\r\rlone\rreturns\r",
    "cr-crlf": b"Subject: x\r\r\n\r\n.a\r\r\nb",
    "no-final-crlf": b"Subject: x\r\n\r\nno end",
    "empty": b"",
}


@pytest.mark.parametrize("name", ["template-2016-02", "canonical-bytes", *NOT_CANONICAL])
def test_data_seam_writes_what_aiosmtplib_writes(rendered: dict[str, Any], name: str) -> None:
    """The same message through aiosmtplib's SMTP.data() and through _data: byte-identical sessions."""
    if name == "template-2016-02":
        message = message_2016_02(rendered)
        assert isinstance(message, WireBytes) and len(message) > 50_000
    elif name == "canonical-bytes":
        message = b"Subject: x\r\n\r\n" + b"a line of text, none starting with a dot\r\n" * 1500
    else:
        message = NOT_CANONICAL[name]
    canonical_ = name in ("template-2016-02", "canonical-bytes")
    assert is_canonical(message) is canonical_

    async def go(server: ScriptedServer) -> None:
        for way in (aiosmtplib_data, mailer_data):
            smtp = await connected(server.port)
            await envelope(smtp)
            assert (await way(smtp, message)).code == 250
            await smtp.quit()

    with ScriptedServer() as server:
        asyncio.run(go(server))
    theirs, ours = server.sessions
    assert ours == theirs, f"{SEAM} wrote other bytes than aiosmtplib's SMTP.data() for {name!r}"
    expected = message if canonical_ else canonical(message)
    assert server.data_section(1) == b"DATA\r\n" + expected + b".\r\nQUIT\r\n"
    assert server.recorder.messages[0].data == server.recorder.messages[1].data


FAULTS = pytest.mark.parametrize("fault", ["drop-at-data", "drop-in-body", "silent-at-data", "silent-after-body"])


@WAYS
@FAULTS
def test_data_closes_the_connection_when_the_server_goes(rendered: dict[str, Any], way: DataWay, fault: str) -> None:
    """Dropped or silent mid-DATA: both ways raise, close, free the lock, and the same SMTP connects again."""
    message = message_2016_02(rendered)
    expected = aiosmtplib.SMTPTimeoutError if fault.startswith("silent") else aiosmtplib.SMTPServerDisconnected

    async def go(server: ScriptedServer) -> None:
        smtp, lock = await ready_for_data(server.port)
        with pytest.raises(expected):
            await way(smtp, message)
        assert not smtp.is_connected and smtp.protocol is None
        assert not lock.locked()
        await smtp.connect()
        await envelope(smtp)
        assert (await way(smtp, message)).code == 250
        await smtp.quit()

    with ScriptedServer(fault) as server:
        asyncio.run(go(server))
    assert len(server.sessions) == 2 and len(server.recorder.messages) == 1
    assert server.recorder.messages[0].data == message


@FAULTS
@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-by-one"])
def test_send_reconnects_after_the_server_goes_mid_data(
    send_settings: Settings, rendered: dict[str, Any], fault: str, pipelining: bool
) -> None:
    """SMTPConnection: the failed send is connection_lost, nothing more is written to that session,
    and the next send opens a new connection and is delivered (with and without PIPELINING)."""
    settings = send_settings.model_copy(update={"smtp_timeout": TIMEOUT})
    message = message_2016_02(rendered)

    async def go(server: ScriptedServer) -> None:
        connection = SMTPConnection(settings.model_copy(update={"smtp_port": server.port}))
        try:
            with pytest.raises(DeliveryError) as caught:
                await connection.send("news@icmpd.org", "ana@example.org", message)
            assert caught.value.connection_lost and not caught.value.permanent
            assert not connection._connected()
            assert (await connection.send("news@icmpd.org", "ana@example.org", message)).startswith("250")
        finally:
            await connection.close()

    with ScriptedServer(fault, pipelining=pipelining) as server:
        asyncio.run(go(server))
    assert len(server.sessions) == 2 and [m.data for m in server.recorder.messages] == [message]
    abandoned = server.data_section(0)
    if fault == "silent-at-data":
        assert abandoned == b"DATA\r\n", "no QUIT (or anything) into a session that may be reading a message"
    elif fault == "silent-after-body":
        assert abandoned == b"DATA\r\n" + message + b".\r\n", "no QUIT into a session waiting to answer DATA"


@pytest.mark.parametrize("fault", ["silent-at-data", "silent-after-body"])
def test_cancelled_data_closes_the_connection_and_frees_the_lock(rendered: dict[str, Any], fault: str) -> None:
    """A DATA cut short by cancellation would put the next command into the message body: _data closes."""
    message = message_2016_02(rendered)
    written = b"DATA\r\n" if fault == "silent-at-data" else message + b".\r\n"

    async def go(server: ScriptedServer) -> None:
        smtp, lock = await ready_for_data(server.port)
        task = asyncio.create_task(_data(smtp, message, 30))
        for _ in range(500):
            if server.sessions[0].endswith(written):
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail(f"the server never received {written[-20:]!r} within 5 s", pytrace=False)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not smtp.is_connected and smtp.protocol is None and not lock.locked()
        await smtp.connect()
        await envelope(smtp)
        assert (await _data(smtp, message, 5)).code == 250
        await smtp.quit()

    with ScriptedServer(fault) as server:
        asyncio.run(go(server))
    assert bytes(server.sessions[0]).endswith(written)
    assert [m.data for m in server.recorder.messages] == [message]


@WAYS
def test_refused_data_keeps_the_connection(smtp_server: SMTPServer, way: DataWay) -> None:
    """A 5xx or 4xx answer to the message is an answer: SMTPDataError, the session stays usable."""

    async def go() -> None:
        smtp = await connected(smtp_server.port)
        await envelope(smtp, "perm@example.org")
        with pytest.raises(aiosmtplib.SMTPDataError) as caught:
            await way(smtp, b"Subject: x\r\n\r\nhi\r\n")
        assert caught.value.code == 554 and smtp.is_connected
        await smtp.rset()
        await envelope(smtp)
        assert (await way(smtp, b"Subject: y\r\n\r\nhi\r\n")).code == 250
        await smtp.quit()

    asyncio.run(go())
    assert [m.recipients for m in smtp_server.recorder.messages] == [["ana@example.org"]]
