"""Email addresses as lists hold them: validated, normalised, and one key to find each by.

The key is how every table and every command matches an address (subscribers, suppressions,
the ledger's re-checks, `subscribers remove`): derived here and nowhere else, so the same
string typed twice, in any case or Unicode normal form, always finds the same row.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email


class InvalidAddress(ValueError):
    """An address a subscriber list cannot hold; the message says why."""


_PLAIN_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


@lru_cache(maxsize=8192)
def _domain(domain: str) -> str:
    """The validator's normalised domain; cached because a list repeats a few domains many times."""
    try:
        return validate_email(f"postmaster@{domain}", check_deliverability=False).domain
    except EmailNotValidError as error:
        raise InvalidAddress(str(error)) from None


def normalise_email(address: str) -> tuple[str, str]:
    """(address as stored, case-insensitive key), or InvalidAddress with the validator's reason.

    email-validator spends most of its time on the domain; plain ASCII local parts (RFC 5322
    dot-atoms, what nearly every list holds) are checked here and their domain validated once.
    """
    text = address.strip()
    local, at, domain = text.rpartition("@")
    if at and len(local) <= 64 and _PLAIN_LOCAL_PART.fullmatch(local):
        email = f"{local}@{_domain(domain)}"
        if len(email) <= 254:
            return email, _key(email)
    try:
        result = validate_email(text, check_deliverability=False)
    except EmailNotValidError as error:
        raise InvalidAddress(str(error)) from None
    return result.normalized, _key(result.normalized)


def email_key(address: str) -> str:
    """The key of any address string: of its normalised form when it is valid, else of the text as typed."""
    try:
        return normalise_email(address)[1]
    except InvalidAddress:
        return _key(unicodedata.normalize("NFC", address.strip()))


def _key(normalised: str) -> str:
    return normalised.lower()
