"""Email addresses as lists hold them: validated, normalised, and one key to find each by.

The key is how every table and every command matches an address (subscribers, suppressions,
the ledger's re-checks, `subscribers remove`): derived here and nowhere else, so the same
string typed twice, in any case or Unicode normal form, always finds the same row.

Addresses are stored as people write them (`josé@bücher.de`, RFC 6531); `envelope_address`
gives the form SMTP carries, the domain as IDNA A-labels. Special-use domains (`.test`,
`.local`...) are refused unless the caller passes them in `special_use_domains` (the setting
of that name); the key does not depend on that choice, so lookups never do.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection
from functools import lru_cache

import email_validator
from email_validator import EmailNotValidError

from mailer.settings import validate_address


class InvalidAddress(ValueError):
    """An address a subscriber list cannot hold; the message says why."""


_ALL_SPECIAL_USE = frozenset(email_validator.SPECIAL_USE_DOMAIN_NAMES)
"""Keys and envelopes are made for every stored address, whatever a deployment accepts today."""

_PLAIN_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


@lru_cache(maxsize=8192)
def _domain(domain: str, accepted: frozenset[str]) -> tuple[str, str]:
    """The validator's (normalised, A-label) domain; cached because a list repeats a few domains many times."""
    try:
        result = validate_address(f"postmaster@{domain}", special_use_domains=accepted)
    except EmailNotValidError as error:
        raise InvalidAddress(str(error)) from None
    return result.domain, result.ascii_domain


def normalise_email(address: str, *, special_use_domains: Collection[str] = ()) -> tuple[str, str]:
    """(address as stored, case-insensitive key), or InvalidAddress with the validator's reason.

    email-validator spends most of its time on the domain; plain ASCII local parts (RFC 5322
    dot-atoms, what nearly every list holds) are checked here and their domain validated once.
    `special_use_domains`: the special-use domains to accept (Settings.special_use_domains).
    """
    accepted = frozenset(special_use_domains)
    text = address.strip()
    local, at, domain = text.rpartition("@")
    if at and len(local) <= 64 and _PLAIN_LOCAL_PART.fullmatch(local):
        email = f"{local}@{_domain(domain, accepted)[0]}"
        if len(email) <= 254:
            return email, _key(email)
    try:
        result = validate_address(text, special_use_domains=accepted)
    except EmailNotValidError as error:
        raise InvalidAddress(str(error)) from None
    return result.normalized, _key(result.normalized)


def envelope_address(address: str) -> str:
    """A stored address as SMTP and the To header carry it: the domain as IDNA A-labels.

    The local part stays as it is; when it is not ASCII, only a relay offering SMTPUTF8 can take it.
    """
    if address.isascii():
        return address
    local, _, domain = address.rpartition("@")
    if domain.isascii():
        return address
    try:
        return f"{local}@{_domain(domain, _ALL_SPECIAL_USE)[1]}"
    except InvalidAddress:
        return address


def email_key(address: str) -> str:
    """The key of any address string: of its normalised form when it is valid, else of the text as typed."""
    try:
        return normalise_email(address, special_use_domains=_ALL_SPECIAL_USE)[1]
    except InvalidAddress:
        return _key(unicodedata.normalize("NFC", address.strip()))


def _key(normalised: str) -> str:
    return normalised.lower()
