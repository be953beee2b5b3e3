"""Message bytes as SMTP DATA wants them: CRLF line endings, no line starting with a dot."""

from __future__ import annotations

import re

_LINE_ENDINGS = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")


class WireBytes(bytes):
    """Bytes made canonical by construction (message.py): CRLF only, no line starting with a dot."""


def is_canonical(data: bytes) -> bool:
    """CRLF line endings only, ends with CRLF, no line starts with a dot."""
    if isinstance(data, WireBytes):
        return True
    crlf = data.count(b"\r\n")
    return (
        data.endswith(b"\r\n")
        and not data.startswith(b".")
        and b"\r\n." not in data
        and data.count(b"\n") == crlf
        and data.count(b"\r") == crlf
    )


def canonical(data: bytes) -> bytes:
    """Any message made safe for DATA: CRLF line endings, leading dots doubled, a final CRLF."""
    data = _LINE_ENDINGS.sub(b"\r\n", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return _LEADING_DOT.sub(b"..", data)
