"""Header values for outgoing mail: no CR/LF or other controls, non-ASCII as RFC 2047 encoded words."""

from __future__ import annotations

import re
from email.header import Header
from email.utils import formataddr

from mailer.errors import MailerError

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def header_safe(value: str) -> str:
    """Header values cannot carry CR, LF or other controls: they are folded into spaces."""
    if _CONTROL.search(value):
        value = _CONTROL.sub(" ", value)
    return " ".join(value.split())


def address_header(name: str, address: str) -> str:
    name = header_safe(name)
    if name.isascii():
        return formataddr((name, address))
    return f"{Header(name, 'utf-8').encode()} <{address}>"


def encoded_header(name: str, value: str) -> bytes:
    """ASCII values as they are (URLs must stay whole); others as RFC 2047 encoded words, folded."""
    value = header_safe(value)
    if value.isascii():
        if len(name) + len(value) > 900:
            raise MailerError(f"{name} header is too long ({len(value)} characters)")
        return f"{name}: {value}\r\n".encode("ascii")
    encoded = Header(value, "utf-8", header_name=name).encode(linesep="\r\n")
    return f"{name}: {encoded}\r\n".encode("ascii")
