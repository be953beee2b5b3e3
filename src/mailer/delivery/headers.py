"""Header values for outgoing mail: no CR/LF or other controls, non-ASCII as RFC 2047 encoded words.

Addresses (`mailbox_header`) go out with their domain as IDNA A-labels; a display name keeps its
ASCII words as they are and only its non-ASCII words become encoded words, so `Zoë Müller
<zoe@example.org>` stays readable in any client. A non-ASCII local part (`josé@...`) is written
as UTF-8, as RFC 6532 allows: such a message is sent only with SMTPUTF8 (see smtp.py).
"""

from __future__ import annotations

import re
from email.header import Header
from email.utils import formataddr

from mailer.audience.addresses import envelope_address
from mailer.errors import MailerError

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")
_Q_LITERAL = re.compile(r"[A-Za-z0-9!*+/-]")
_SPECIALS = re.compile(r'[][\\()<>@,:;".]')
_ENCODED_TEXT = 75 - len("=?utf-8?q??=")
"""RFC 2047: an encoded word is at most 75 characters."""
_LINE = 76


def header_safe(value: str) -> str:
    """Header values cannot carry CR, LF or other controls: they are folded into spaces."""
    if _CONTROL.search(value):
        value = _CONTROL.sub(" ", value)
    return " ".join(value.split())


def _q(char: str) -> str:
    if char == " ":
        return "_"
    if _Q_LITERAL.fullmatch(char):
        return char
    return "".join(f"={octet:02X}" for octet in char.encode("utf-8"))


def _encoded_words(text: str) -> list[str]:
    """Q-encoded words for a phrase (RFC 2047 5(3)), split after a space where possible, never inside a character.

    A space between two words stays inside the first encoded word: the whitespace between
    adjacent encoded words is dropped when they are decoded.
    """
    words = text.split(" ")
    encoded: list[str] = []
    current = ""
    for index, word in enumerate(words):
        chars = [_q(char) for char in (word if index == len(words) - 1 else word + " ")]
        if current and len(current) + sum(map(len, chars)) > _ENCODED_TEXT:
            encoded.append(current)
            current = ""
        for char in chars:  # a word longer than an encoded word is cut between characters
            if len(current) + len(char) > _ENCODED_TEXT:
                encoded.append(current)
                current = ""
            current += char
    encoded.append(current)
    return [f"=?utf-8?q?{word}?=" for word in encoded]


def _phrase_tokens(name: str) -> list[str]:
    """A display name as header tokens: plain words as they are, each run of other words as encoded words.

    A run keeps its inner spaces inside the encoded text, since the space between two encoded
    words is dropped when they are decoded.
    """
    tokens: list[str] = []
    run: list[str] = []
    for word in name.split(" "):
        if _ATOM.fullmatch(word) and "=?" not in word:
            if run:
                tokens += _encoded_words(" ".join(run))
                run = []
            tokens.append(word)
        else:
            run.append(word)
    if run:
        tokens += _encoded_words(" ".join(run))
    return tokens


def _ascii_phrase(name: str) -> str:
    if _SPECIALS.search(name):
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return name


def mailbox_header(field: str, name: str, address: str) -> bytes:
    """A whole `From:`/`To:`/`Reply-To:` line, folded at spaces; UTF-8 only in a non-ASCII local part."""
    name = header_safe(name)
    address = envelope_address(address)
    if name.isascii() and address.isascii():
        return encoded_header(field, formataddr((name, address)))
    if not name:
        tokens = [address]
    elif name.isascii():
        tokens = [_ascii_phrase(name), f"<{address}>"]
    else:
        tokens = [*_phrase_tokens(name), f"<{address}>"]
    lines = [f"{field}: {tokens[0]}"]
    for token in tokens[1:]:
        if len(lines[-1]) + 1 + len(token) > _LINE:
            lines.append(f" {token}")
        else:
            lines[-1] += f" {token}"
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def encoded_header(name: str, value: str) -> bytes:
    """ASCII values as they are (URLs must stay whole); others as RFC 2047 encoded words, folded."""
    value = header_safe(value)
    if value.isascii():
        if len(name) + len(value) > 900:
            raise MailerError(f"{name} header is too long ({len(value)} characters)")
        return f"{name}: {value}\r\n".encode("ascii")
    encoded = Header(value, "utf-8", header_name=name).encode(linesep="\r\n")
    return f"{name}: {encoded}\r\n".encode("ascii")
