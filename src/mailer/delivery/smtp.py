"""Delivering message bytes: one SMTP connection per worker (aiosmtplib), or .eml files for dry runs.

The seam: aiosmtplib's DATA re-normalises line endings and dot-stuffs every message with two
regex passes (1-1.5 ms for 60 KB, `bench/send.py --data-seam`), the biggest CPU cost of a send.
Messages from message.py are already canonical (CRLF only, no line over 76 octets, no line
starting with a dot), so `_data` writes them as they are; anything else goes through
`canonical()` first. It uses
aiosmtplib's protocol lock and reader directly, hence the pinned version range;
tests/test_smtp.py checks those internals, and that `_data` puts the same bytes on the wire as
aiosmtplib's `SMTP.data()` and leaves the connection in the same state when the server goes.

Who is to blame for a refusal decides what happens next. A reply that refuses the session or
the sender (the greeting, EHLO, STARTTLS, the login, MAIL FROM, or a recipient refused because
of the session: "Helo command rejected", authentication required) is `SMTPSetupError`: the send
stops with one line naming the setting to change, and no row is marked. A reply about one
recipient is that recipient's `DeliveryError`: 5xx permanent, 4xx temporary. Once the end of
data was written, a lost or late reply makes the delivery *uncertain*: it may have been
accepted, so it must not be sent again unasked.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn, Protocol

import aiosmtplib
from aiosmtplib import SMTPResponse, SMTPStatus

from mailer.audience.addresses import envelope_address
from mailer.delivery.pipelining import DataProgress, PipelinedSession, Refused
from mailer.delivery.tls import UnreadableCA, tls_context
from mailer.delivery.wire import canonical, is_canonical
from mailer.errors import DeliveryFailed
from mailer.settings import Settings

log = logging.getLogger("mailer.delivery.smtp")


class DeliveryError(Exception):
    """One message not accepted; `permanent` for 5xx replies, which are never retried.

    `uncertain`: the whole message was written and no reply came (dropped or too late), so the
    relay may have accepted it; such a delivery is recorded as uncertain, not sent again.
    """

    def __init__(
        self,
        reply: str,
        *,
        code: int | None = None,
        permanent: bool = False,
        connection_lost: bool = False,
        uncertain: bool = False,
    ) -> None:
        super().__init__(reply)
        self.reply = reply
        self.code = code
        self.permanent = permanent
        self.connection_lost = connection_lost
        self.uncertain = uncertain


class SMTPSetupError(DeliveryFailed):
    """The relay cannot be used at all (login refused, TLS failure, unknown host): the send stops."""


class Transport(Protocol):
    async def send(self, sender: str, recipient: str, data: bytes) -> str: ...

    async def close(self) -> None: ...


async def _data(
    smtp: aiosmtplib.SMTP, data: bytes, timeout: float, *, progress: DataProgress | None = None
) -> SMTPResponse:
    """DATA with the message written as it is; see the module docstring. Call it after RCPT.

    Like aiosmtplib's `SMTP.data()` (5.1), it holds the protocol's command lock, raises
    SMTPDataError for a reply other than 354 / 250 and leaves the connection open then, and
    closes the connection (`smtp.is_connected` is False, the next send reconnects) when the
    server goes or does not answer in time. It also closes on anything else that interrupts
    it, cancellation included: a DATA cut short leaves the server reading the message body, so
    the next command would end up in it. The lock is released in every case. `progress`
    learns when the message and its final dot line were handed to the connection.
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
            if progress is not None:
                progress.end_written = True
            response = await protocol.read_response(timeout=timeout)
    except aiosmtplib.SMTPDataError:
        raise  # the server answered DATA: the session is in step, the connection stays
    except BaseException:
        smtp.close()
        raise
    if response.code != SMTPStatus.completed:
        raise aiosmtplib.SMTPDataError(response.code, response.message)
    return response


def helo_name(settings: Settings) -> str:
    """The name mailer gives in EHLO: smtp_helo_name, else this host's fully-qualified name."""
    return settings.smtp_helo_name or socket.getfqdn()


def helo_warning(settings: Settings) -> str | None:
    """A line for the CLI when the EHLO name is not a fully-qualified domain, which many relays refuse."""
    name = helo_name(settings)
    if "." in name and name.lower() != "localhost" and not name.lower().startswith("localhost."):
        return None
    origin = "smtp_helo_name" if settings.smtp_helo_name else "this host's name (socket.getfqdn())"
    return (
        f"warning: the EHLO name {name!r} ({origin}) is not a fully-qualified domain name; relays such as "
        "Postfix with reject_non_fqdn_helo_hostname refuse it: set smtp_helo_name, e.g. mail.example.org"
    )


def tls_warning(settings: Settings) -> str | None:
    """A line for the CLI when the relay's certificate is not checked (smtp_tls_verify = false)."""
    if settings.smtp_tls == "none" or settings.smtp_tls_verify:
        return None
    return (
        f"warning: smtp_tls_verify = false: the certificate of {settings.smtp_host} is not checked, so anyone on "
        "the way can read and change the mail and the password; use it only with a test relay, "
        "and smtp_ca_file for a relay with its own CA"
    )


def _tls_context(ca_file: Path | None, verify: bool, host: str) -> ssl.SSLContext:
    try:
        return tls_context(ca_file, verify, f"the SMTP server {host}", "smtp_tls_verify")
    except UnreadableCA as error:
        raise SMTPSetupError(f"smtp_ca_file {ca_file}: {error}") from None


def _tls_error(error: BaseException) -> ssl.SSLError | None:
    """The TLS error behind an aiosmtplib or asyncio error, if there is one."""
    while error is not None:
        if isinstance(error, ssl.SSLError):
            return error
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    return None


_UNSAFE_IN_ENVELOPE = re.compile(r"[\r\n<>\x00]")
"""What would end an envelope address or its command early; addresses are checked before this, so it is a last guard."""

_SESSION_REFUSALS = re.compile(r"helo command rejected|sender address rejected|authentication required", re.I)
"""Postfix checks EHLO and sender at RCPT time (smtpd_delay_reject): such a 5xx refuses the session, not the recipient."""


@dataclass
class SMTPConnection:
    """One connection to the relay, opened on first use and again after it drops.

    When the relay announces PIPELINING (and smtp_pipelining is on), each message is one pipelined
    transaction (pipelining.py) on the connection aiosmtplib set up; otherwise aiosmtplib's MAIL and
    RCPT, then `_data`, one reply at a time.
    """

    settings: Settings
    _smtp: aiosmtplib.SMTP | None = None
    _pipe: PipelinedSession | None = None
    _extensions: frozenset[str] = frozenset()
    _helo: str = field(default="", repr=False)

    @property
    def server(self) -> str:
        return f"{self.settings.smtp_host}:{self.settings.smtp_port_effective}"

    def _setup_error(self, what: str, reply: str, hint: str) -> NoReturn:
        raise SMTPSetupError(f"SMTP server {self.server} {what}: {reply}; {hint}") from None

    def _login_hint(self) -> str:
        if self.settings.smtp_username:
            return "check smtp_username and smtp_password"
        return "set smtp_username and smtp_password"

    def _refusal_hint(self, reply: str) -> str:
        """What to change when the relay refuses the session or the sender with this reply."""
        text = reply.lower()
        if "helo" in text or "ehlo" in text:
            return "set smtp_helo_name to this host's fully-qualified domain name, e.g. mail.example.org"
        if "starttls" in text:
            return "set smtp_tls = starttls (or tls)"
        if reply.startswith(("530", "535")) or "authentica" in text or "not logged in" in text:
            return self._login_hint()
        return "check sender, and that the relay lets this host or account send as it"

    def _tls_failed(self, error: ssl.SSLError) -> NoReturn:
        if isinstance(error, ssl.SSLCertVerificationError):
            raise SMTPSetupError(
                f"SMTP server {self.server}: TLS certificate not accepted ({error.verify_message}); "
                "set smtp_ca_file to the CA bundle that signed it (or, for a test relay only, smtp_tls_verify = false)"
            ) from None
        raise SMTPSetupError(
            f"SMTP server {self.server}: TLS failed ({error.reason or error}); "
            "check smtp_tls and smtp_port (587 starttls, 465 tls)"
        ) from None

    async def _connect(self) -> aiosmtplib.SMTP:
        s = self.settings
        context = None if s.smtp_tls == "none" else _tls_context(s.smtp_ca_file, s.smtp_tls_verify, s.smtp_host)
        if not self._helo:
            self._helo = s.smtp_helo_name if s.smtp_helo_name else await asyncio.to_thread(socket.getfqdn)
        smtp = aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port_effective,
            use_tls=s.smtp_tls == "tls",
            start_tls=False,
            tls_context=context if s.smtp_tls == "tls" else None,
            local_hostname=self._helo,
            timeout=s.smtp_timeout,
        )
        try:
            await smtp.connect()
            await self._hello(smtp)
            if s.smtp_tls == "starttls":
                if not smtp.supports_extension("starttls"):
                    raise SMTPSetupError(
                        f"SMTP server {self.server}: the server does not offer STARTTLS; "
                        "check smtp_tls and smtp_port (587 starttls, 465 tls)"
                    )
                await smtp.starttls(tls_context=context)
                await self._hello(smtp)
            if s.smtp_username:
                password = s.smtp_password.get_secret_value() if s.smtp_password else ""
                await smtp.login(s.smtp_username, password)
        except SMTPSetupError:
            smtp.close()
            raise
        except aiosmtplib.SMTPAuthenticationError as error:
            smtp.close()
            self._setup_error(
                f"refused the login for {s.smtp_username!r}", f"{error.code} {error.message}", self._login_hint()
            )
        except aiosmtplib.SMTPResponseException as error:
            smtp.close()
            reply = f"{error.code} {error.message}"
            if error.code >= 500:
                self._setup_error("refused the connection", reply, self._refusal_hint(reply))
            raise DeliveryError(f"{self.server}: {reply}", code=error.code, connection_lost=True) from None
        except (aiosmtplib.SMTPException, OSError) as error:
            smtp.close()
            if (tls := _tls_error(error)) is not None:
                self._tls_failed(tls)
            if isinstance(error, aiosmtplib.SMTPConnectError) and isinstance(error.__cause__, socket.gaierror):
                raise SMTPSetupError(
                    f"SMTP server {self.server}: unknown host {s.smtp_host!r}; check smtp_host"
                ) from None
            if isinstance(error, aiosmtplib.SMTPNotSupported) or "AUTH" in str(error):
                self._setup_error("cannot log in", str(error), "check smtp_tls and smtp_username")
            reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            raise DeliveryError(f"cannot connect to {self.server}: {reason}", connection_lost=True) from None
        return smtp

    async def _hello(self, smtp: aiosmtplib.SMTP) -> None:
        """EHLO, and nothing else: aiosmtplib would fall back to HELO, hiding why EHLO was refused."""
        try:
            await smtp.ehlo()
        except aiosmtplib.SMTPHeloError as error:
            if error.code >= 500:
                self._setup_error(
                    f"refused EHLO {self._helo}",
                    f"{error.code} {error.message}",
                    "set smtp_helo_name to this host's fully-qualified domain name, e.g. mail.example.org",
                )
            raise

    def _connected(self) -> bool:
        if self._pipe is not None:
            return self._pipe.is_connected
        return self._smtp is not None and self._smtp.is_connected

    async def _open(self) -> None:
        await self.close()
        smtp = await self._connect()
        self._extensions = frozenset(smtp.esmtp_extensions)
        if self.settings.smtp_pipelining and "pipelining" in self._extensions:
            self._pipe = PipelinedSession.take_over(smtp)
        else:
            self._smtp = smtp

    def _envelope(self, sender: str, recipient: str) -> tuple[str, str, list[str]]:
        """MAIL FROM and RCPT TO addresses (A-label domains) and MAIL options; SMTPUTF8 only when a local part needs it."""
        mail_from, rcpt_to = envelope_address(sender), envelope_address(recipient)
        if _UNSAFE_IN_ENVELOPE.search(mail_from + rcpt_to):
            raise DeliveryError(f"{recipient!r} cannot go in an SMTP envelope", permanent=True)
        options: list[str] = []
        if not (mail_from.isascii() and rcpt_to.isascii()):
            if "smtputf8" not in self._extensions:
                if not mail_from.isascii():
                    raise SMTPSetupError(
                        f"SMTP server {self.server} does not offer SMTPUTF8, needed for the sender {sender}; "
                        "set sender to an ASCII address"
                    )
                raise DeliveryError(f"the relay does not offer SMTPUTF8, needed for {recipient}", permanent=True)
            options.append("SMTPUTF8")
            if "8bitmime" in self._extensions:
                options.append("BODY=8BITMIME")
        return mail_from, rcpt_to, options

    async def _transaction(
        self, mail_from: str, options: list[str], rcpt_to: str, data: bytes, progress: DataProgress
    ) -> SMTPResponse:
        """MAIL, RCPT and DATA: pipelined, or one command at a time; a refusal is `Refused` naming its stage."""
        timeout = self.settings.smtp_timeout
        if self._pipe is not None:
            envelope = f"MAIL FROM:<{mail_from}>{''.join(' ' + o for o in options)}\r\nRCPT TO:<{rcpt_to}>\r\n"
            if not is_canonical(data):
                data = canonical(data)
            return await self._pipe.transaction(envelope.encode(), data, timeout, progress)
        smtp = self._smtp
        assert smtp is not None
        stage = "sender"
        try:
            await smtp.mail(mail_from, options=options, encoding="utf-8", timeout=timeout)
            stage = "recipient"
            await smtp.rcpt(rcpt_to, encoding="utf-8", timeout=timeout)
            stage = "message"
            return await _data(smtp, data, timeout, progress=progress)
        except aiosmtplib.SMTPResponseException as error:
            raise Refused(stage, SMTPResponse(error.code, error.message)) from None

    async def _reset(self) -> None:
        """RSET after a refusal; a connection that cannot even do that is closed (the next send reconnects)."""
        timeout = self.settings.smtp_timeout
        try:
            if self._pipe is not None:
                if (await self._pipe.command(b"RSET\r\n", timeout)).code != 250:
                    await self.close()
            elif self._smtp is not None:
                await self._smtp.rset(timeout=timeout)
        except aiosmtplib.SMTPException:
            await self.close()

    async def send(self, sender: str, recipient: str, data: bytes) -> str:
        if not self._connected():
            await self._open()
        mail_from, rcpt_to, options = self._envelope(sender, recipient)
        if "size" in self._extensions:
            options.append(f"SIZE={len(data)}")
        progress = DataProgress()
        try:
            response = await self._transaction(mail_from, options, rcpt_to, data, progress)
        except Refused as error:
            reply = f"{error.code} {error.message}"
            if error.code == 421 or not self._connected():
                await self.close()
                raise DeliveryError(reply, code=error.code, connection_lost=True) from None
            await self._reset()
            stage = error.stage
            if error.code >= 500 and (stage == "sender" or (stage == "recipient" and self._refuses_session(error))):
                await self.close()
                self._setup_error(
                    f"refused the sender {sender}" if stage == "sender" else f"refused the session (at {recipient})",
                    reply,
                    self._refusal_hint(reply),
                )
            raise DeliveryError(reply, code=error.code, permanent=500 <= error.code < 600) from None
        except (TimeoutError, aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as error:
            await self.close()
            what = str(error) or type(error).__name__
            if progress.end_written:
                raise DeliveryError(
                    f"{self.server}: no reply after the end of data ({what}); the message may have been delivered",
                    connection_lost=True,
                    uncertain=True,
                ) from None
            raise DeliveryError(f"{self.server}: {what}", connection_lost=True) from None
        return f"{response.code} {response.message}"

    @staticmethod
    def _refuses_session(error: aiosmtplib.SMTPResponseException) -> bool:
        return error.code == 530 or bool(_SESSION_REFUSALS.search(error.message))

    async def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            await pipe.quit(timeout=5)
        if smtp is not None and smtp.is_connected:
            try:
                await smtp.quit(timeout=5)
            except (TimeoutError, aiosmtplib.SMTPException, OSError):
                smtp.close()


_WRITTEN = re.compile(r"\d{6}-[A-Za-z0-9@._-]+\.eml")


@dataclass
class FileTransport:
    """Writes each message as an .eml file instead of sending it: the dry run."""

    folder: Path
    count: int = 0

    def clear(self) -> int:
        """Remove the messages an earlier dry run wrote here, so the folder holds this run's alone."""
        old = [path for path in self.folder.glob("*.eml") if _WRITTEN.fullmatch(path.name)]
        for path in old:
            path.unlink()
        return len(old)

    async def send(self, sender: str, recipient: str, data: bytes) -> str:
        self.count += 1
        self.folder.mkdir(parents=True, exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9@._-]", "_", recipient)
        (self.folder / f"{self.count:06d}-{safe}.eml").write_bytes(data)
        return "250 written to file"

    async def close(self) -> None:
        return None
