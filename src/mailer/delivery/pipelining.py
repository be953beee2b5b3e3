"""SMTP command pipelining (RFC 2920): MAIL FROM, RCPT TO and DATA in one write, their replies read together.

aiosmtplib connects, says EHLO, starts TLS and logs in; when the server announces PIPELINING,
`PipelinedSession.take_over` then puts its own small protocol on aiosmtplib's transport, because
aiosmtplib's reader keeps one reply at a time and drops what arrives while none is awaited. From
then on one message costs one round trip before the body and one after it, instead of four:

    client: MAIL FROM:<a> SIZE=n\\r\\nRCPT TO:<b>\\r\\nDATA\\r\\n        (one write)
    server: 250 (MAIL)  250 (RCPT)  354 (DATA)                     (read in order)
    client: <message>.\\r\\n                                          (only when all three were accepted)
    server: 250 (end of data)

Every reply is checked, in order, and all three are read before anything else is written, so
the session stays in step whatever the server said. A refused MAIL or RCPT raises `Refused` for
that stage, and the body is not sent: if the server accepted DATA all the same (354 with no
recipient), an empty message ("." alone) ends it, as RFC 2920 section 3.1 asks, and the
server refuses it for having no recipient. A 421 closes the session at once. The caller then
answers as it would without pipelining (RSET, retry, or stop the send).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass

import aiosmtplib
from aiosmtplib import SMTPResponse

MAX_REPLY_BYTES = 64 * 1024
"""More than this without a complete reply is not an SMTP server talking: the session is closed."""


class Refused(aiosmtplib.SMTPResponseException):
    """The server refused one command of the transaction; `stage` is "sender", "recipient" or "message"."""

    def __init__(self, stage: str, reply: SMTPResponse) -> None:
        super().__init__(reply.code, reply.message)
        self.stage = stage


@dataclass
class DataProgress:
    """How far a transaction got: once the end of data is written, a missing reply leaves the delivery uncertain."""

    end_written: bool = False


class _ReplyReader(asyncio.Protocol):
    """Collects every complete reply the server sends, however many are outstanding and however they are split."""

    def __init__(self, transport: asyncio.WriteTransport) -> None:
        self.transport = transport
        self._buffer = bytearray()
        self._replies: deque[SMTPResponse] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._lost: BaseException | None = None

    def data_received(self, data: bytes) -> None:
        self._buffer.extend(data)
        while (reply := self._parse()) is not None:
            self._replies.append(reply)
        if len(self._buffer) > MAX_REPLY_BYTES:
            self._fail(aiosmtplib.SMTPResponseException(-1, "reply too long"))
            self.transport.close()
            return
        if self._replies:
            self._wake()

    def _parse(self) -> SMTPResponse | None:
        """The first complete reply in the buffer (a reply's last line has a space after its code), or None."""
        lines: list[bytes] = []
        offset = 0
        while (end := self._buffer.find(b"\n", offset)) != -1:
            line = bytes(self._buffer[offset : end + 1])
            offset = end + 1
            lines.append(line[4:].strip(b" \t\r\n"))
            if line[3:4] != b"-":
                del self._buffer[:offset]
                try:
                    code = int(line[:3])
                except ValueError:
                    code = -1
                    lines[-1] = line.strip()
                return SMTPResponse(code, b"\n".join(lines).decode("utf-8", "surrogateescape"))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(aiosmtplib.SMTPServerDisconnected(f"connection lost: {exc}" if exc else "connection lost"))

    def eof_received(self) -> bool:
        self._fail(aiosmtplib.SMTPServerDisconnected("the server closed the connection"))
        return False

    def _fail(self, error: BaseException) -> None:
        if self._lost is None:
            self._lost = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def reply(self, timeout: float) -> SMTPResponse:
        """The next reply, in the order the server sent them."""
        if not self._replies:
            if self._lost is not None:
                raise self._lost
            loop = asyncio.get_running_loop()
            self._waiter = loop.create_future()
            timer = loop.call_later(timeout, self._wake)
            try:
                await self._waiter
            finally:
                timer.cancel()
                self._waiter = None
            if not self._replies:
                if self._lost is not None:
                    raise self._lost
                raise aiosmtplib.SMTPReadTimeoutError(f"no reply within {timeout:g} s")
        return self._replies.popleft()


class PipelinedSession:
    """An SMTP session after EHLO (and STARTTLS and AUTH), sending each message as one pipelined transaction."""

    def __init__(self, transport: asyncio.WriteTransport) -> None:
        self._reader = _ReplyReader(transport)
        transport.set_protocol(self._reader)

    @classmethod
    def take_over(cls, smtp: aiosmtplib.SMTP) -> PipelinedSession:
        """Carry on the session aiosmtplib opened on its transport; `smtp` must not be used afterwards."""
        transport = smtp.transport
        if transport is None or transport.is_closing():
            raise aiosmtplib.SMTPServerDisconnected("connection lost")
        return cls(transport)  # type: ignore[arg-type]

    @property
    def is_connected(self) -> bool:
        return self._reader._lost is None and not self._reader.transport.is_closing()

    def _write(self, data: bytes) -> None:
        if not self.is_connected:
            raise self._reader._lost or aiosmtplib.SMTPServerDisconnected("connection lost")
        self._reader.transport.write(data)

    async def transaction(
        self, envelope: bytes, data: bytes, timeout: float, progress: DataProgress | None = None
    ) -> SMTPResponse:
        """One message: `envelope` is the MAIL FROM and RCPT TO lines (CRLF-terminated), `data` canonical bytes.

        Returns the reply to the end of data. Raises `Refused` with the stage that was refused (the
        session is in step, ready for RSET), or closes the connection and raises aiosmtplib's
        SMTPServerDisconnected / SMTPReadTimeoutError when the server goes or does not answer.
        """
        try:
            self._write(envelope + b"DATA\r\n")
            refused: Refused | None = None
            start = None
            for stage, accepted in (("sender", (250,)), ("recipient", (250, 251)), ("message", (354,))):
                reply = await self._reader.reply(timeout)
                if reply.code == 421:
                    self.close()
                    raise Refused(stage, reply)
                if reply.code not in accepted and refused is None:
                    refused = Refused(stage, reply)
                start = reply
            assert start is not None
            if refused is not None:
                if start.code == 354:
                    self._write(b".\r\n")
                    await self._reader.reply(timeout)
                raise refused
            self._write(data + b".\r\n")
            if progress is not None:
                progress.end_written = True
            final = await self._reader.reply(timeout)
        except Refused:
            raise
        except BaseException:
            self.close()  # out of step with the server: nothing more may be written on this connection
            raise
        if final.code != 250:
            raise Refused("message", final)
        return final

    async def command(self, line: bytes, timeout: float) -> SMTPResponse:
        """One command and its reply (RSET, NOOP, QUIT)."""
        try:
            self._write(line)
            return await self._reader.reply(timeout)
        except BaseException:
            self.close()
            raise

    async def quit(self, timeout: float) -> None:
        with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
            await self.command(b"QUIT\r\n", timeout)
        self.close()

    def close(self) -> None:
        if not self._reader.transport.is_closing():
            self._reader.transport.close()
        self._reader._fail(aiosmtplib.SMTPServerDisconnected("connection closed"))
