"""VERP return paths: each message's envelope sender names its delivery, so a bounce says whose it is.

`bounces@news.example.org` becomes `bounces+3f.k2m4q7xa5ntbc@news.example.org` for delivery row 0x3f: the row id
in base 36 and a signature of it and of the recipient's address, lower case only (some MTAs fold the local
part's case) and short enough for every MTA's local-part limit (64). Only the holder of the secret can make a
token, so a forged bounce cannot suppress anyone; and since the address is signed too, a row id that SQLite
gives again after a list was deleted does not make an old bounce name the new row's recipient.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

_SIGNATURE_BYTES = 8
_TOKEN = re.compile(r"([0-9a-z]{1,13})\.([a-z2-7]{13})")


def _keyed(secret: str) -> hmac.HMAC:
    """The HMAC with the secret taken in: copying it per message skips padding the key again (about half the cost)."""
    return hmac.new(secret.encode(), digestmod=hashlib.sha256)


def _signature(keyed: hmac.HMAC, delivery: str, email: str) -> str:
    mac = keyed.copy()
    mac.update(f"verp:{delivery}:{email.lower()}".encode())
    digest = mac.digest()[:_SIGNATURE_BYTES]
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
        self._keyed = _keyed(secret)

    def token(self, delivery_id: int, email: str) -> str:
        delivery = _base36(delivery_id)
        return f"{delivery}.{_signature(self._keyed, delivery, email)}"

    def address(self, delivery_id: int, email: str) -> str:
        return f"{self._local}+{self.token(delivery_id, email)}@{self._domain}"


def token_delivery(token: str) -> int | None:
    """The delivery id a token claims to name (check it with `genuine`); None when it is not one of ours at all."""
    found = _TOKEN.fullmatch(token.strip().lower())
    return int(found.group(1), 36) if found else None


def genuine(secret: str, token: str, email: str) -> bool:
    """Whether we made this token, for this delivery and this recipient."""
    found = _TOKEN.fullmatch(token.strip().lower())
    if found is None:
        return False
    return hmac.compare_digest(_signature(_keyed(secret), found.group(1), email), found.group(2))
