"""Pipelined SMTP (RFC 2920): MAIL, RCPT and DATA in one write, every reply still checked.

Against aiosmtpd (tests/smtp_server.py, announcing PIPELINING) and against Postfix's smtp-sink,
which refuses, drops or hangs up on the commands it is told to.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as AiosmtpdSMTP

from mailer.delivery.pipelining import PipelinedSession, Refused
from mailer.delivery.smtp import DeliveryError, SMTPConnection
from mailer.settings import Settings
from tests.conftest import missing_service
from tests.smtp_server import Recorder, free_port
from tests.smtp_sink import SmtpSink

SENDER = "news@icmpd.org"
PATHS = pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-by-one"])


def message(n: int = 1) -> bytes:
    body = b"".join(b"line %d of a message long enough to need several segments\r\n" % i for i in range(2000))
    return b"Subject: number %d\r\nMessage-ID: <%d@icmpd.org>\r\n\r\n" % (n, n) + body


class ChunkServer:
    """aiosmtpd (announcing PIPELINING or not) that keeps each piece of each session as it came off the socket."""

    def __init__(self, *, pipelining: bool = True) -> None:
        self.recorder = Recorder(pipelining=pipelining)
        self.sessions: list[list[bytes]] = []
        self.port = free_port()
        sessions = self.sessions

        class Recording(AiosmtpdSMTP):
            def data_received(self, data: bytes) -> None:
                if not hasattr(self, "chunks"):
                    self.chunks: list[bytes] = []
                    sessions.append(self.chunks)
                self.chunks.append(data)
                super().data_received(data)

        class RecordingController(Controller):
            def factory(self) -> Recording:
                return Recording(self.handler, **self.SMTP_kwargs)

        self.controller = RecordingController(self.recorder, hostname="127.0.0.1", port=self.port, decode_data=False)

    def wire(self, session: int = -1) -> bytes:
        return b"".join(self.sessions[session])


@pytest.fixture
def chunk_server(request: pytest.FixtureRequest) -> Iterator[ChunkServer]:
    server = ChunkServer(pipelining=getattr(request, "param", True))
    server.controller.start()
    yield server
    server.controller.stop()


def connection_to(settings: Settings, port: int, **changes: Any) -> SMTPConnection:
    return SMTPConnection(
        settings.model_copy(
            update={"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_tls": "none", "smtp_timeout": 5, **changes}
        )
    )


def run(send: Callable[[SMTPConnection], Any], connection: SMTPConnection) -> Any:
    async def go() -> Any:
        try:
            return await send(connection)
        finally:
            await connection.close()

    return asyncio.run(go())


@PATHS
def test_the_envelope_goes_in_one_write_only_when_pipelining(
    chunk_server: ChunkServer, settings: Settings, pipelining: bool
) -> None:
    connection = connection_to(settings, chunk_server.port, smtp_pipelining=pipelining)

    async def three(connection: SMTPConnection) -> list[str]:
        return [await connection.send(SENDER, f"reader{n}@example.org", message(n)) for n in range(3)]

    replies = run(three, connection)
    assert replies == ["250 2.0.0 queued"] * 3
    assert [m.data for m in chunk_server.recorder.messages] == [message(n) for n in range(3)]
    assert len(chunk_server.sessions) == 1, "all three messages on one connection"
    together = [c for c in chunk_server.sessions[0] if c.startswith(b"MAIL FROM:") and c.endswith(b"\r\nDATA\r\n")]
    if pipelining:
        assert [c.split(b"\r\n")[1] for c in together] == [b"RCPT TO:<reader%d@example.org>" % n for n in range(3)]
    else:
        assert together == [], "without pipelining each command waits for the reply to the one before"


@pytest.mark.parametrize("chunk_server", [True, False], ids=["pipelined", "one-by-one"], indirect=True)
def test_a_refused_recipient_gets_no_body_and_the_session_goes_on(
    chunk_server: ChunkServer, settings: Settings
) -> None:
    """RCPT 550 with MAIL accepted: the reply is the server's own words, no message is written,
    RSET puts the session back in step and the next message goes on the same connection."""
    connection = connection_to(settings, chunk_server.port)

    async def refused_then_delivered(connection: SMTPConnection) -> tuple[DeliveryError, str]:
        with pytest.raises(DeliveryError) as caught:
            await connection.send(SENDER, "nouser@example.org", message(1))
        return caught.value, await connection.send(SENDER, "ana@example.org", message(2))

    error, reply = run(refused_then_delivered, connection)
    assert error.permanent and error.code == 550 and not error.connection_lost
    assert error.reply == "550 5.1.1 <nouser@example.org>: Recipient address rejected: User unknown"
    assert reply == "250 2.0.0 queued"
    assert len(chunk_server.sessions) == 1
    wire = chunk_server.wire()
    assert b"Subject: number 1" not in wire, "the refused recipient's message was written"
    first = wire.index(b"RCPT TO:<nouser@example.org>")
    assert wire.index(b"RSET\r\n", first) < wire.index(b"MAIL FROM:", first)
    assert [m.recipients for m in chunk_server.recorder.messages] == [["ana@example.org"]]


@PATHS
def test_a_temporary_refusal_at_rcpt_is_temporary(
    chunk_server: ChunkServer, settings: Settings, pipelining: bool
) -> None:
    """Greylisting (450 at RCPT) is a retry, not a bounce; the retry is delivered."""
    connection = connection_to(settings, chunk_server.port, smtp_pipelining=pipelining)

    async def twice(connection: SMTPConnection) -> tuple[DeliveryError, str]:
        with pytest.raises(DeliveryError) as caught:
            await connection.send(SENDER, "grey-1@example.org", message(1))
        return caught.value, await connection.send(SENDER, "grey-1@example.org", message(1))

    error, reply = run(twice, connection)
    assert error.code == 450 and not error.permanent and not error.uncertain
    assert "greylisted" in error.reply
    assert reply == "250 2.0.0 queued"
    assert [m.data for m in chunk_server.recorder.messages] == [message(1)]


# --- against Postfix's smtp-sink ------------------------------------------------------------


@pytest.fixture
def smtp_sink(tmp_path: Path) -> Iterator[Callable[..., SmtpSink]]:
    started: list[SmtpSink] = []

    def start(*options: str) -> SmtpSink:
        try:
            sink = SmtpSink(tmp_path / f"sink{len(started)}", *options)
        except FileNotFoundError as error:
            missing_service(str(error))
        started.append(sink)
        return sink

    yield start
    for sink in started:
        sink.stop()


def test_smtp_sink_takes_pipelined_messages_intact(smtp_sink: Callable[..., SmtpSink], settings: Settings) -> None:
    sink = smtp_sink()
    connection = connection_to(settings, sink.port)

    async def three(connection: SMTPConnection) -> list[str]:
        replies = [await connection.send(SENDER, f"reader{n}@example.org", message(n)) for n in range(3)]
        assert connection._pipe is not None, "smtp-sink announces PIPELINING: the session should pipeline"
        return replies

    replies = run(three, connection)
    assert len(replies) == 3 and all(r.startswith("250 2.0.0 Ok") for r in replies), replies
    dumped = sink.messages()
    for n in range(3):
        assert any(
            f"X-Rcpt-Args: <reader{n}@example.org>".encode() in d and message(n).replace(b"\r\n", b"\n") in d
            for d in dumped
        ), f"message {n} did not arrive whole at smtp-sink"


async def pipelined(port: int) -> PipelinedSession:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, local_hostname="client.test", timeout=5)
    await smtp.connect()
    await smtp.ehlo()
    return PipelinedSession.take_over(smtp)


ENVELOPE = b"MAIL FROM:<news@icmpd.org>\r\nRCPT TO:<ana@example.org>\r\n"


@pytest.mark.parametrize(
    ("refuse", "stage", "code"),
    [("-fRCPT", "recipient", 500), ("-fMAIL", "sender", 500), ("-rRCPT", "recipient", 450), ("-rMAIL", "sender", 450)],
)
def test_a_refusal_in_the_pipeline_leaves_the_session_in_step(
    smtp_sink: Callable[..., SmtpSink], refuse: str, stage: str, code: int
) -> None:
    """smtp-sink refuses MAIL or RCPT: DATA is then refused too (503), no body is written, and RSET
    and NOOP are answered in order, so the replies never slip by one."""
    sink = smtp_sink(refuse)

    async def go() -> tuple[Refused, int, int]:
        session = await pipelined(sink.port)
        with pytest.raises(Refused) as caught:
            await session.transaction(ENVELOPE, message(1), timeout=5)
        reset = await session.command(b"RSET\r\n", 5)
        noop = await session.command(b"NOOP\r\n", 5)
        await session.quit(5)
        return caught.value, reset.code, noop.code

    refused, reset, noop = asyncio.run(go())
    assert (refused.stage, refused.code) == (stage, code)
    assert "Error: command failed" in refused.message
    assert (reset, noop) == (250, 250)
    assert sink.messages() == []


def test_a_421_in_the_pipeline_closes_the_connection(smtp_sink: Callable[..., SmtpSink], settings: Settings) -> None:
    sink = smtp_sink("-QRCPT")
    connection = connection_to(settings, sink.port)

    async def go(connection: SMTPConnection) -> DeliveryError:
        with pytest.raises(DeliveryError) as caught:
            await connection.send(SENDER, "ana@example.org", message(1))
        assert not connection._connected()
        return caught.value

    error = run(go, connection)
    assert error.code == 421 and error.connection_lost and not error.uncertain and not error.permanent
    assert sink.messages() == []


def test_no_reply_after_the_end_of_data_is_uncertain(smtp_sink: Callable[..., SmtpSink], settings: Settings) -> None:
    """smtp-sink hangs up after "." without answering: the message may have been taken, so it is
    uncertain (never sent again), and the next message opens a new connection."""
    sink = smtp_sink("-q.")
    connection = connection_to(settings, sink.port)

    async def go(connection: SMTPConnection) -> DeliveryError:
        with pytest.raises(DeliveryError) as caught:
            await connection.send(SENDER, "ana@example.org", message(1))
        return caught.value

    error = run(go, connection)
    assert error.uncertain and error.connection_lost
    assert "no reply after the end of data" in error.reply


def test_a_refusal_after_the_body_started_is_the_servers_reply(
    smtp_sink: Callable[..., SmtpSink], settings: Settings
) -> None:
    """smtp-sink -A 0 answers 354 and then 550 at once, before the body is read: a permanent
    failure with smtp-sink's words, not a hang or an uncertain delivery."""
    sink = smtp_sink("-A0")
    connection = connection_to(settings, sink.port, smtp_timeout=3)

    async def go(connection: SMTPConnection) -> DeliveryError:
        with pytest.raises(DeliveryError) as caught:
            await connection.send(SENDER, "ana@example.org", message(1))
        return caught.value

    error = run(go, connection)
    assert error.code == 550 and error.permanent and not error.uncertain
