"""VERP return paths: each message's envelope sender names its delivery, so a bounce says whose it is.

`bounces@news.example.org` becomes `bounces+3f.k2m4q7xa5ntbc@news.example.org` for delivery row 0x3f: the row id
in base 36 and a signature of it, lower case only (some MTAs fold the local part's case) and short enough
for every MTA's local-part limit (64). Only the holder of the secret can make a token, so a forged bounce
cannot suppress anyone.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

_SIGNATURE_BYTES = 8
_TOKEN = re.compile(r"([0-9a-z]{1,13})\.([a-z2-7]{13})")


def _signature(secret: bytes, delivery: str) -> str:
    digest = hmac.new(secret, b"verp:" + delivery.encode(), hashlib.sha256).digest()[:_SIGNATURE_BYTES]
    return base64.b32encode(digest).decode().rstrip("=").lower()


def _base36(number: int) -> str:
    digits = ""
    while True:
        number, digit = divmod(number, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[digit] + digits
        if not number:
            return digits


class VerpAddresses:
    """Makes each delivery's envelope sender; one per send, so the secret is encoded once."""

    def __init__(self, bounce_address: str, secret: str) -> None:
        self._local, _, self._domain = bounce_address.rpartition("@")
        self._secret = secret.encode()

    def token(self, delivery_id: int) -> str:
        delivery = _base36(delivery_id)
        return f"{delivery}.{_signature(self._secret, delivery)}"

    def address(self, delivery_id: int) -> str:
        return f"{self._local}+{self.token(delivery_id)}@{self._domain}"


def read_verp_token(secret: str, token: str) -> int | None:
    """The delivery id a genuine token names; None for anything forged, altered or malformed."""
    found = _TOKEN.fullmatch(token.strip().lower())
    if not found:
        return None
    delivery, signature = found.groups()
    if not hmac.compare_digest(_signature(secret.encode(), delivery), signature):
        return None
    return int(delivery, 36)
