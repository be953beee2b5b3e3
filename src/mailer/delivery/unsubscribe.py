"""Signed unsubscribe tokens: only the holder of the secret can make one, so nobody can unsubscribe someone else.

A token names the subscriber, the list and, for links in a sent issue, the issue, so an unsubscribe is counted
against the issue that prompted it (`mailer report`). Tokens without an issue, as older messages carry, still work.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import NamedTuple

from mailer.errors import MailerError

_SIGNATURE_BYTES = 16
_ID = re.compile(r"[0-9]{1,18}")
"""A database id as make_token writes it: ASCII digits only (str.isdigit() also takes '²'), and short enough for int()."""
_ISSUE = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,99}")


class BadToken(MailerError):
    """A token that was not made with our secret, or was altered; says nothing about any address."""


class UnsubscribeToken(NamedTuple):
    subscriber_id: int
    list_id: int
    issue: str | None


def _signature(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, b"unsubscribe:" + payload, hashlib.sha256).digest()[:_SIGNATURE_BYTES]


def make_token(secret: str, subscriber_id: int, list_id: int, issue: str | None = None) -> str:
    """`subscriber.list.signature`, then `.issue` when the link is in an issue (slugs may hold dots: it comes last)."""
    payload = f"{subscriber_id}.{list_id}" + (f".{issue}" if issue else "")
    signature = base64.urlsafe_b64encode(_signature(secret.encode(), payload.encode())).rstrip(b"=").decode()
    return f"{subscriber_id}.{list_id}.{signature}" + (f".{issue}" if issue else "")


def read_token(secret: str, token: str) -> UnsubscribeToken:
    """Whose, which list's and which issue's link a genuine token is; BadToken otherwise."""
    parts = token.split(".", 3)
    issue = parts[3] if len(parts) == 4 else None
    if (
        len(parts) < 3
        or not _ID.fullmatch(parts[0])
        or not _ID.fullmatch(parts[1])
        or (issue is not None and not _ISSUE.fullmatch(issue))
    ):
        raise BadToken("this unsubscribe link is not valid")
    expected = make_token(secret, int(parts[0]), int(parts[1]), issue)
    if not hmac.compare_digest(expected.encode(), token.encode()):
        raise BadToken("this unsubscribe link is not valid")
    return UnsubscribeToken(int(parts[0]), int(parts[1]), issue)


def unsubscribe_url(public_url: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/unsubscribe/{token}"
