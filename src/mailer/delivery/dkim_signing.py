"""Optional DKIM signatures (dkimpy), covering the headers receivers judge a bulk sender by."""

from __future__ import annotations

from pathlib import Path

from mailer.delivery.wire import WireBytes
from mailer.errors import ConfigError

SIGNED_HEADERS = [
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"reply-to",
    b"list-id",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
    b"mime-version",
    b"content-type",
]


class DkimSigner:
    def __init__(self, key_file: Path, selector: str, domain: str) -> None:
        import dkim  # only when signing: dkimpy and its crypto cost about 3 MB a send without DKIM need not carry

        self._dkim = dkim
        try:
            self._key = key_file.read_bytes()
        except OSError as error:
            raise ConfigError(f"dkim_key_file {key_file}: cannot read: {error.strerror}") from None
        self._selector = selector.encode()
        self._domain = domain.encode()
        self.sign(WireBytes(b"From: check@" + self._domain + b"\r\nSubject: key check\r\n\r\nkey check\r\n"))

    def sign(self, message: WireBytes) -> WireBytes:
        """The message with a DKIM-Signature header in front; costs one RSA signature (about a millisecond)."""
        try:
            header = self._dkim.sign(message, self._selector, self._domain, self._key, include_headers=SIGNED_HEADERS)
        except self._dkim.KeyFormatError as error:
            raise ConfigError(f"dkim_key_file: not a usable private key ({error})") from None
        return WireBytes(bytes(header) + message)
