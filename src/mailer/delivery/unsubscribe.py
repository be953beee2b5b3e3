"""Signed unsubscribe tokens: only the holder of the secret can make one, so nobody can unsubscribe someone else."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from mailer.errors import MailerError

_SIGNATURE_BYTES = 16
_ID = re.compile(r"[0-9]{1,18}")
"""A database id as make_token writes it: ASCII digits only (str.isdigit() also takes '²'), and short enough for int()."""


class BadToken(MailerError):
    """A token that was not made with our secret, or was altered; says nothing about any address."""


def _signature(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, b"unsubscribe:" + payload, hashlib.sha256).digest()[:_SIGNATURE_BYTES]


def make_token(secret: str, subscriber_id: int, list_id: int) -> str:
    payload = f"{subscriber_id}.{list_id}".encode()
    signature = base64.urlsafe_b64encode(_signature(secret.encode(), payload)).rstrip(b"=").decode()
    return f"{subscriber_id}.{list_id}.{signature}"


def read_token(secret: str, token: str) -> tuple[int, int]:
    """(subscriber id, list id) of a genuine token; BadToken otherwise."""
    parts = token.split(".")
    if len(parts) != 3 or not _ID.fullmatch(parts[0]) or not _ID.fullmatch(parts[1]):
        raise BadToken("this unsubscribe link is not valid")
    expected = make_token(secret, int(parts[0]), int(parts[1]))
    if not hmac.compare_digest(expected.encode(), token.encode()):
        raise BadToken("this unsubscribe link is not valid")
    return int(parts[0]), int(parts[1])


def unsubscribe_url(public_url: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/unsubscribe/{token}"
