"""Header lines for outgoing mail: one line of text each, non-ASCII as RFC 2047 encoded words, folded at 76.

Every value goes through clean_text first, the rule names are stored by, so no value can carry
CR, LF or another control character into a header of its own. Lines are folded at whitespace to at
most 76 characters: RFC 2047's limit for lines holding encoded words, under RFC 5322's 78. A fold
never falls inside an encoded word, a quoted word's escape or a `<...>` (an address, a URL in
List-Unsubscribe, a Message-ID); the whitespace it replaces is kept, so unfolding gives back the
value and DKIM's relaxed canonicalisation sees the same header. Nothing is folded right after the
field name (Python's parser, for one, then reads a leading space into the value). A word too long
for its line that is not a `<...>` (a 300-letter name, a long word in a subject) becomes encoded
words, which may carry ASCII too and are cut between characters (RFC 2047: at most 75 each, and
the space between two of them is not part of the text). A `<...>` cannot be cut: one longer than
the rest of the line (List-Unsubscribe's https link, a Message-ID on a long domain) stays whole
on the field's first line, and a later one on a line of its own: those lines pass 76, as RFC 5322
allows up to its hard limit of 998 octets; a line over that is an error.

Addresses (`mailbox_header`) go out with their domain as IDNA A-labels; a display name keeps its
ASCII words as they are and only its non-ASCII words (and words too long for a line) become
encoded words, so `Zoë Müller <zoe@example.org>` stays readable in any client. A non-ASCII local part (`josé@...`) is written
as UTF-8, as RFC 6532 allows: such a message is sent only with SMTPUTF8 (see smtp.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

from mailer.audience.addresses import envelope_address
from mailer.audience.clean_text import clean_text
from mailer.errors import MailerError

_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")
_Q_LITERAL = re.compile(r"[A-Za-z0-9!*+/-]")
_SPECIALS = re.compile(r'[][\\()<>@,:;".]')
_TOKEN = re.compile(r"(?:<[^>]*>?|[^ <])+")
"""A run between spaces; a `<...>` stays whole even if it holds a space."""
_ENCODED_TEXT = 75 - len("=?utf-8?q??=")
"""RFC 2047: an encoded word is at most 75 characters."""
_WIDTH = 76
_MAX_LINE = 998


@lru_cache(maxsize=4096)
def _q(char: str) -> str:
    if char == " ":
        return "_"
    if _Q_LITERAL.fullmatch(char):
        return char
    return "".join(f"={octet:02X}" for octet in char.encode("utf-8"))


def _octets(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


class _Folder:
    """One header field, token by token: each goes on the current line if it fits in 76, else on a new one."""

    def __init__(self, field: str) -> None:
        self.field = field
        self.lines = [f"{field}:"]
        self.used = _octets(self.lines[0])
        """Octets on the current line."""

    def room(self) -> int:
        """Octets left on the current line after the space before a next token."""
        return _WIDTH - self.used - 1

    def empty(self) -> bool:
        """Nothing after the field name yet: the first token goes here whatever its length."""
        return self.lines == [f"{self.field}:"]

    def put(self, token: str) -> None:
        """A token that does not fit on the current line goes on a new one, never right after the field name."""
        size = 1 + _octets(token)
        if size - 1 <= self.room() or self.empty():
            self.lines[-1] += f" {token}"
            self.used += size
        else:
            self.lines.append(f" {token}")
            self.used = size

    def put_encoded(self, text: str) -> None:
        """Q-encoded words for text (RFC 2047 5(3)), each sized to the line it starts on.

        Words are split after a space where possible, never inside a character. A space between
        two words stays inside the first encoded word: the whitespace between adjacent encoded
        words is dropped when they are decoded.
        """
        words = text.split(" ")
        chunks = [
            [_q(char) for char in (word if index == len(words) - 1 else word + " ")] for index, word in enumerate(words)
        ]
        encoded = ""
        limit = 0
        for chunk in chunks:
            size = sum(map(len, chunk))
            if encoded and len(encoded) + size > limit:
                self.put(f"=?utf-8?q?{encoded}?=")
                encoded = ""
            if not encoded:
                limit = self._encoded_limit(size if size <= _ENCODED_TEXT else _ENCODED_TEXT // 2)
            for char in chunk:  # a word longer than an encoded word is cut between characters
                if len(encoded) + len(char) > limit:
                    self.put(f"=?utf-8?q?{encoded}?=")
                    encoded = ""
                    limit = self._encoded_limit(len(char))
                encoded += char
        self.put(f"=?utf-8?q?{encoded}?=")

    def _encoded_limit(self, needed: int) -> int:
        """How much encoded text the next encoded word may hold: what fits here if `needed` does, else a line's worth.

        A word that fits in one encoded word is not cut to fill a line; a longer one, cut anyway,
        starts on the current line when half an encoded word fits there. The first encoded word
        after the field name is sized to that line, since nothing is folded right after the name.
        """
        here = min(_ENCODED_TEXT, self.room() - len("=?utf-8?q??="))
        if self.empty():
            return max(here, len("=XX") * 4)
        return here if here >= needed else _ENCODED_TEXT

    def header(self) -> bytes:
        for line in self.lines:
            if _octets(line) > _MAX_LINE:
                raise MailerError(
                    f"{self.field} header is too long: a line of {_octets(line)} characters cannot be folded "
                    f"(at most {_MAX_LINE})"
                )
        return ("\r\n".join(self.lines) + "\r\n").encode("utf-8")


def _fold(
    field: str,
    words: list[str],
    plain: Callable[[str], bool],
    *,
    whole: Callable[[str], bool] | None = None,
    last: str = "",
) -> bytes:
    """Words as they are where `plain` (ASCII) and short enough for a line, or `whole`; runs of others encoded.

    A plain word too long for any line it could start on (a 300-letter name, a long word in a
    subject) is encoded too, and so cut between characters; a `whole` word (a `<...>`) is never
    cut. `last` goes at the end as it is.
    """
    folder = _Folder(field)
    room = _WIDTH - len(field) - 2
    """For the first word, right after the field name; any later word may start a line of its own."""
    run: list[str] = []
    for word in words:
        if (whole is not None and whole(word)) or (plain(word) and len(word) <= room):
            if run:
                folder.put_encoded(" ".join(run))
                run = []
            folder.put(word)
        else:
            run.append(word)
        room = _WIDTH - 1
    if run:
        folder.put_encoded(" ".join(run))
    if last:
        folder.put(last)
    if folder.empty():
        folder.lines[0] += " "
    return folder.header()


def _atom(word: str) -> bool:
    return bool(_ATOM.fullmatch(word)) and "=?" not in word


def _ascii_phrase(name: str) -> str:
    if _SPECIALS.search(name):
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return name


def _everything(word: str) -> bool:
    return True


def mailbox_header(field: str, name: str, address: str) -> bytes:
    """A whole `From:`/`To:`/`Reply-To:` field, folded at spaces; UTF-8 only in a non-ASCII local part.

    An ASCII name is written as it is, or as one quoted string when it holds specials, folded at
    its spaces if it must be (RFC 5322 3.2.4). A name with non-ASCII words, with a word that could
    be read as an encoded word, or with a word too long for a line (a quoted string cannot be cut
    where it has no space) has its atoms as they are and its other words encoded.
    """
    name = clean_text(name)
    address = envelope_address(address)
    if not name:
        return _fold(field, [], _atom, last=address)
    if name.isascii() and "=?" not in name:
        phrase = _ascii_phrase(name)
        words = phrase.split(" ")
        first = _WIDTH - len(field) - 2
        if len(phrase) <= first or (len(words[0]) <= first and max(map(len, words)) < _WIDTH):
            return _fold(field, words, _everything, last=f"<{address}>")  # _fold's measure: nothing gets encoded
    return _fold(field, name.split(" "), _atom, last=f"<{address}>")


def _plain_text(word: str) -> bool:
    """May stay as it is in a header: ASCII that no reader takes for an encoded word."""
    return word.isascii() and "=?" not in word


def _bracketed(word: str) -> bool:
    """A `<...>` (a URL, a Message-ID), maybe with a comma after it: it stays whole whatever its length.

    No regular expression: this runs on every recipient's unsubscribe link.
    """
    return (
        word.startswith("<")
        and word.endswith((">", ">,"))
        and word.count("<") == word.count(">") == 1
        and word.isascii()
    )


def encoded_header(name: str, value: str) -> bytes:
    """A whole header field: ASCII words as they are (URLs in `<...>` stay whole), others as encoded words; folded."""
    return _fold(name, _TOKEN.findall(clean_text(value)), _plain_text, whole=_bracketed)
