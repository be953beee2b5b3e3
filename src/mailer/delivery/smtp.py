"""Delivering message bytes: one SMTP connection per worker (aiosmtplib), or .eml files for dry runs.

The seam: aiosmtplib's DATA re-normalises line endings and dot-stuffs every message with two
regex passes (1-1.5 ms for 60 KB, `bench/send.py --data-seam`), the biggest CPU cost of a send.
Messages from message.py are already canonical (CRLF only, no line over 76 octets, no line
starting with a dot), so `_data` writes them as they are; anything else goes through
`canonical()` first. It uses
aiosmtplib's protocol lock and reader directly, hence the pinned version range;
tests/test_smtp.py checks those internals, and that `_data` puts the same bytes on the wire as
aiosmtplib's `SMTP.data()` and leaves the connection in the same state when the server goes.
"""

from __future__ import annotations

import re
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiosmtplib
from aiosmtplib import SMTPResponse, SMTPStatus

from mailer.delivery.wire import canonical, is_canonical
from mailer.errors import MailerError
from mailer.settings import Settings


class DeliveryError(Exception):
    """One message not accepted; `permanent` for 5xx replies, which are never retried."""

    def __init__(
        self, reply: str, *, code: int | None = None, permanent: bool = False, connection_lost: bool = False
    ) -> None:
        super().__init__(reply)
        self.reply = reply
        self.code = code
        self.permanent = permanent
        self.connection_lost = connection_lost


class SMTPSetupError(MailerError):
    """The relay cannot be used at all (login refused, TLS failure, unknown host): the send stops."""


class Transport(Protocol):
    async def send(self, sender: str, recipient: str, data: bytes) -> str: ...

    async def close(self) -> None: ...


async def _data(smtp: aiosmtplib.SMTP, data: bytes, timeout: float) -> SMTPResponse:
    """DATA with the message written as it is; see the module docstring. Call it after RCPT.

    Like aiosmtplib's `SMTP.data()` (5.1), it holds the protocol's command lock, raises
    SMTPDataError for a reply other than 354 / 250 and leaves the connection open then, and
    closes the connection (`smtp.is_connected` is False, the next send reconnects) when the
    server goes or does not answer in time. It also closes on anything else that interrupts
    it, cancellation included: a DATA cut short leaves the server reading the message body, so
    the next command would end up in it. The lock is released in every case.
    """
    protocol = smtp.protocol
    lock = None if protocol is None else protocol._command_lock
    if protocol is None or lock is None:
        smtp.close()
        raise aiosmtplib.SMTPServerDisconnected("Server not connected")
    if not is_canonical(data):
        data = canonical(data)
    try:
        async with lock:
            protocol._response_pending = True
            protocol.write(b"DATA\r\n")
            start = await protocol.read_response(timeout=timeout)
            if start.code != SMTPStatus.start_input:
                raise aiosmtplib.SMTPDataError(start.code, start.message)
            protocol._response_pending = True
            protocol.write(data + b".\r\n")
            response = await protocol.read_response(timeout=timeout)
    except aiosmtplib.SMTPDataError:
        raise  # the server answered DATA: the session is in step, the connection stays
    except BaseException:
        smtp.close()
        raise
    if response.code != SMTPStatus.completed:
        raise aiosmtplib.SMTPDataError(response.code, response.message)
    return response


@dataclass
class SMTPConnection:
    """One connection to the relay, opened on first use and again after it drops."""

    settings: Settings
    _smtp: aiosmtplib.SMTP | None = None

    @property
    def server(self) -> str:
        return f"{self.settings.smtp_host}:{self.settings.smtp_port_effective}"

    async def _connect(self) -> aiosmtplib.SMTP:
        s = self.settings
        smtp = aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port_effective,
            use_tls=s.smtp_tls == "tls",
            start_tls=s.smtp_tls == "starttls",
            validate_certs=True,
            timeout=s.smtp_timeout,
            username=s.smtp_username,
            password=s.smtp_password.get_secret_value() if s.smtp_password else None,
        )
        try:
            await smtp.connect()
        except aiosmtplib.SMTPAuthenticationError as error:
            raise SMTPSetupError(
                f"SMTP server {self.server} refused the login for {s.smtp_username!r}: {error.code} {error.message}"
            ) from None
        except aiosmtplib.SMTPConnectError as error:
            cause = error.__cause__
            if isinstance(cause, socket.gaierror):
                raise SMTPSetupError(
                    f"SMTP server {self.server}: unknown host {s.smtp_host!r}; check smtp_host"
                ) from None
            if isinstance(cause, ssl.SSLError):
                raise SMTPSetupError(f"SMTP server {self.server}: TLS failed: {cause.reason or cause}") from None
            raise DeliveryError(f"cannot connect to {self.server}: {error.message}", connection_lost=True) from None
        except aiosmtplib.SMTPException as error:
            text = str(error)
            if "STARTTLS" in text or "TLS" in text:
                raise SMTPSetupError(f"SMTP server {self.server}: {text}") from None
            raise DeliveryError(f"{self.server}: {text}", connection_lost=True) from None
        except ssl.SSLError as error:
            raise SMTPSetupError(f"SMTP server {self.server}: TLS failed: {error.reason or error}") from None
        except OSError as error:
            raise DeliveryError(
                f"cannot connect to {self.server}: {error.strerror or error}", connection_lost=True
            ) from None
        return smtp

    async def send(self, sender: str, recipient: str, data: bytes) -> str:
        if self._smtp is None or not self._smtp.is_connected:
            self._smtp = await self._connect()
        smtp = self._smtp
        timeout = self.settings.smtp_timeout
        try:
            options = [f"SIZE={len(data)}"] if smtp.supports_extension("size") else []
            await smtp.mail(sender, options=options, timeout=timeout)
            await smtp.rcpt(recipient, timeout=timeout)
            response = await _data(smtp, data, timeout)
        except aiosmtplib.SMTPResponseException as error:
            reply = f"{error.code} {error.message}"
            if error.code == 421 or not smtp.is_connected:
                await self.close()
                raise DeliveryError(reply, code=error.code, connection_lost=True) from None
            try:
                await smtp.rset(timeout=timeout)
            except aiosmtplib.SMTPException:
                await self.close()
            raise DeliveryError(reply, code=error.code, permanent=500 <= error.code < 600) from None
        except (TimeoutError, aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as error:
            await self.close()
            raise DeliveryError(f"{self.server}: {error or type(error).__name__}", connection_lost=True) from None
        return f"{response.code} {response.message}"

    async def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None and smtp.is_connected:
            try:
                await smtp.quit(timeout=5)
            except (TimeoutError, aiosmtplib.SMTPException, OSError):
                smtp.close()


@dataclass
class FileTransport:
    """Writes each message as an .eml file instead of sending it: the dry run."""

    folder: Path
    count: int = 0

    async def send(self, sender: str, recipient: str, data: bytes) -> str:
        self.count += 1
        self.folder.mkdir(parents=True, exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9@._-]", "_", recipient)
        (self.folder / f"{self.count:06d}-{safe}.eml").write_bytes(data)
        return "250 written to file"

    async def close(self) -> None:
        return None
