"""Relays that refuse or fail the way real ones do (aiosmtpd on 127.0.0.1, in a thread), and a private CA.

On top of tests/smtp_server.py's recipients (temp-N, perm, drop, bye), by recipient:
  lost@...       the whole message is received, then the connection is closed without a reply
  late@...       the whole message is received, the 250 comes `late_seconds` later
  gone@...       the connection is closed at the DATA command, before any of the message is written
and, for every session: `mail_reply` answers MAIL FROM, `rcpt_reply` answers RCPT TO,
`fqdn_helo_only` refuses an EHLO name without a dot at EHLO (504 5.5.2), or at RCPT the way Postfix
does (`helo_check_at_rcpt`, smtpd_delay_reject), `smtputf8` offers SMTPUTF8, `tls` serves STARTTLS
(or implicit TLS with `implicit_tls`) with a certificate for 127.0.0.1 signed by a CA the test makes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServerProtocol

from mailer.settings import Settings, load_settings
from tests.conftest import ROOT, SECRET
from tests.smtp_server import Received, Recorder, free_port


@dataclass
class CertificateAuthority:
    """A CA (its certificate in `ca_file`) and a server certificate for 127.0.0.1 it signed."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_ca(folder: Path) -> CertificateAuthority:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test Organisation Internal CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay.internal")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    found = CertificateAuthority(folder / "ca.pem", folder / "relay.pem", folder / "relay-key.pem")
    found.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    found.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    found.key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return found


@dataclass
class RelayRecorder(Recorder):
    mail_reply: str | None = None
    rcpt_reply: str | None = None
    fqdn_helo_only: bool = False
    helo_check_at_rcpt: bool = False
    late_seconds: float = 2.0
    ehlo_names: list[str] = field(default_factory=list)
    mail_options: list[list[str]] = field(default_factory=list)

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        self.ehlo_names.append(hostname)
        if self.fqdn_helo_only and not self.helo_check_at_rcpt and "." not in hostname:
            return [f"504 5.5.2 <{hostname}>: Helo command rejected: need fully-qualified hostname"]
        session.host_name = hostname
        return responses

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if self.mail_reply:
            return self.mail_reply
        self.mail_options.append(list(options))
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if self.fqdn_helo_only and self.helo_check_at_rcpt and "." not in (session.host_name or ""):
            return f"504 5.5.2 <{session.host_name}>: Helo command rejected: need fully-qualified hostname"
        if self.rcpt_reply:
            return self.rcpt_reply
        return await super().handle_RCPT(server, session, envelope, address, options)

    async def handle_DATA(self, server: SMTPServerProtocol, session: Any, envelope: Any) -> str:
        [rcpt] = envelope.rcpt_tos
        local = rcpt.split("@")[0]
        if not local.startswith(("lost", "late")):
            return await super().handle_DATA(server, session, envelope)
        with self.lock:
            self.attempts[rcpt] += 1
            self.messages.append(Received([rcpt], envelope.original_content, time.monotonic()))
            self.lock.notify_all()
        if local.startswith("lost"):
            transport = server.transport
            assert isinstance(transport, asyncio.WriteTransport)
            transport.close()
            return "451 gone"
        await asyncio.sleep(self.late_seconds)
        return "250 2.0.0 queued"


class RelaySession(SMTPServerProtocol):
    """aiosmtpd's session; `gone@` recipients lose the connection at the DATA command."""

    async def smtp_DATA(self, arg: str) -> None:
        if self.envelope is not None and self.envelope.rcpt_tos and self.envelope.rcpt_tos[0].startswith("gone"):
            assert self.transport is not None
            self.transport.close()
            return
        await super().smtp_DATA(arg)


class Relay:
    """A relay on 127.0.0.1 (threaded aiosmtpd on a free port); use it as a context manager."""

    def __init__(
        self, *, smtputf8: bool = False, ca: CertificateAuthority | None = None, implicit_tls: bool = False
    ) -> None:
        self.recorder = RelayRecorder()
        self.port = free_port()
        kwargs: dict[str, Any] = {"enable_SMTPUTF8": smtputf8}
        if ca is not None and not implicit_tls:
            kwargs["tls_context"] = ca.server_context()

        class RelayController(Controller):
            def factory(self) -> RelaySession:
                return RelaySession(self.handler, **self.SMTP_kwargs)

        self.controller = RelayController(
            self.recorder,
            hostname="127.0.0.1",
            port=self.port,
            decode_data=False,
            ssl_context=ca.server_context() if ca is not None and implicit_tls else None,
            **kwargs,
        )

    def __enter__(self) -> Relay:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


def relay_settings(port: int, tmp_path: Path, **updates: object) -> Settings:
    """Settings for sending to a test relay on 127.0.0.1: plain SMTP, a fully-qualified EHLO name, a SQLite ledger."""
    values: dict[str, object] = {
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_tls": "none",
        "smtp_helo_name": "mailer.example.org",
        "sender": "ICMPD Newsletter <newsletter@icmpd.org>",
        "unsubscribe_secret": SECRET,
        "database_url": f"sqlite:///{tmp_path / 'mailer.sqlite3'}",
        "retry_base_delay": 0.05,
        "smtp_pool_size": 2,
        "smtp_timeout": 5,
    }
    return load_settings(ROOT / "mailer.toml", **{**values, **updates})
