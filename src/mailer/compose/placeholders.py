"""Placeholders: `{name}` in an issue's greeting, and the `{{name}}` markers the email files carry until sending.

An issue writes `{name}` (the subscriber's name) or `{name|colleague}` (with a fallback for
subscribers without one) in `greeting`, the only field where placeholders are filled in;
`{{` and `}}` write literal braces there. The rendered email carries them as markers that
sending fills per recipient (delivery/message.py): `{{name}}`, `{{name|colleague}}`, and
Mustache-style sections around lines only some recipients get: `{{#name}}...{{/name}}` for
those with a name, `{{^name}}...{{/name}}` for those without.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass

GREETING_KEYS = ("name",)
"""What `greeting` may say in braces."""

MARKER_KEYS = ("email", "name", "unsubscribe_url")
"""Per-recipient values the email files carry as `{{key}}` markers."""

_LOOKS_LIKE = re.compile(r"\{\s*([#^/]?)\s*([A-Za-z_][A-Za-z0-9_]*)\s*(\|[^{}]*)?\}")
"""`{name}`, `{nmae}`, `{name|x}`, `{#name}`: what may read as a placeholder."""
_STRAY = re.compile(r"(\{)?" + _LOOKS_LIKE.pattern + r"(?(1)\})")
"""The same, or doubled as the email files' markers: `{{email}}`."""

MARKER = re.compile(
    r"\{\{(?:(?P<sigil>[#^/])(?P<section>" + "|".join(MARKER_KEYS) + r")"
    r"|(?P<key>" + "|".join(MARKER_KEYS) + r")(?:\|(?P<fallback>[^{}]*))?)\}\}"
)


class Trusted(str):
    """Text of ours that may carry markers (the greeting lines, the recipient's markers).

    The email templates pass every other value through `guard_braces` (see templates.environment),
    so nothing from an issue file, a paragraph's markup or the branding can turn into a marker.
    """


_DOUBLED = re.compile(r"([{}])(?=\1)")


def guard_braces(text: str) -> str:
    """Content as it goes into an email part: a zero-width space splits every `{{` and `}}`, so none reads as a marker."""
    return _DOUBLED.sub("\\1\u200b", text)


_INVISIBLE = frozenset("\u115f\u1160\u3164\uffa0\u2800")
"""Letters and symbols that draw nothing (Hangul fillers, the blank Braille pattern)."""


def visible(text: str) -> bool:
    """Whether the text shows anything: not only spaces, format characters, marks or fillers."""
    return any(char not in _INVISIBLE and unicodedata.category(char)[0] not in "ZCM" for char in text)


@dataclass(frozen=True)
class Placeholder:
    key: str
    fallback: str | None = None
    """Said instead of an empty value; None: the recipient gets the default greeting instead of the line."""

    def marker(self) -> str:
        return "{{" + self.key + ("" if self.fallback is None else "|" + self.fallback) + "}}"


@dataclass(frozen=True)
class Slip:
    """One problem in a text, `offset` characters into it."""

    offset: int
    message: str


def _known(key: str, keys: tuple[str, ...]) -> str | None:
    """`key` if it is one of `keys`, else the one it is probably a typo of."""
    return key if key in keys else next(iter(difflib.get_close_matches(key.strip(), keys, n=1)), None)


def _unknown(written: str, key: str, rest: str) -> str:
    hint = _known(key, GREETING_KEYS)
    if hint:
        return f"unknown placeholder {written}; did you mean {{{hint}{rest}}}?"
    known = ", ".join(f"{{{key}}}" for key in GREETING_KEYS)
    return f"unknown placeholder {written}; the greeting knows {known} (write {{{{ and }}}} for literal braces)"


def _doubled(text: str, i: int) -> tuple[Slip, int] | None:
    """`{{name}}` at `i`, and where it ends: the email files' way of writing a placeholder; in an issue, literal braces."""
    found = _LOOKS_LIKE.match(text, i + 1) if text.startswith("{", i) else None
    if found is None or not text.startswith("}", found.end()):
        return None
    sigil, key, rest = found.groups()
    hint = _known(key, GREETING_KEYS)
    if not (sigil or rest or hint or _known(key, MARKER_KEYS)):
        return None
    written = f"{{{found.group()}}}"
    instead = f"; write {{{hint}{rest or ''}}}" if hint else ""
    message = f"{written} would show as {found.group()} to every reader{instead} (double braces are literal braces)"
    return Slip(i, message), found.end() + 1


def parse_greeting(text: str) -> tuple[list[str | Placeholder], list[Slip]]:
    """The greeting as literal text and placeholders, and every mistake in it."""
    parts: list[str | Placeholder] = []
    slips: list[Slip] = []
    literal: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if (doubled := _doubled(text, i)) is not None:
            slip, i = doubled
            slips.append(slip)
        elif char in "{}" and text.startswith(char * 2, i):
            if literal and literal[-1] == char:
                slips.append(
                    Slip(i - 2, f"{char * 4}: two literal braces in a row are reserved for the email's own markers")
                )
            literal.append(char)
            i += 2
        elif char == "}":
            slips.append(Slip(i, "a lone }; write }} for a literal brace"))
            i += 1
        elif char == "{":
            close, reopen = text.find("}", i + 1), text.find("{", i + 1)
            if close < 0 or 0 <= reopen < close:
                slips.append(Slip(i, "a { that is not closed; write {name}, or {{ for a literal brace"))
                i += 1
                continue
            written = text[i : close + 1]
            key, bar, fallback = text[i + 1 : close].partition("|")
            if key not in GREETING_KEYS:
                slips.append(Slip(i, _unknown(written, key, bar + fallback)))
            elif bar and not fallback.strip():
                slips.append(
                    Slip(i, f"{written} has no fallback after |; write one such as {{{key}|colleague}}, or {{{key}}}")
                )
            else:
                if literal:
                    parts.append("".join(literal))
                    literal = []
                parts.append(Placeholder(key, " ".join(fallback.split()) if bar else None))
            i = close + 1
        else:
            literal.append(char)
            i += 1
    if literal:
        parts.append("".join(literal))
    return parts, slips


def stray_placeholders(text: str) -> list[Slip]:
    """Placeholders outside greeting: nothing fills them in, so every reader would see them as written."""
    slips = []
    for found in _STRAY.finditer(text):
        _, sigil, key, fallback = found.groups()
        if sigil or fallback or _known(key, MARKER_KEYS):
            slips.append(
                Slip(
                    found.start(),
                    f"{found.group()} looks like a placeholder; placeholders work only in greeting, "
                    "and here every reader would see it as written",
                )
            )
    return slips


def check_greeting(text: str) -> str:
    """The model's check: a greeting that cannot be filled in for every recipient is refused."""
    _, slips = parse_greeting(text)
    if slips:
        raise ValueError(slips[0].message)
    return text


@dataclass(frozen=True)
class GreetingLine:
    """One way the greeting line reads in the email files; `when` and `end` enclose a line only some recipients get."""

    text: str
    when: str = ""
    end: str = ""


def greeting_lines(greeting: str | None, default: str | None) -> list[GreetingLine]:
    """The greeting as the email files carry it, with `default` (the default_greeting setting) for recipients without a name.

    `Dear {name|colleague},` is one line for everybody. `Dear {name},` is a line for recipients
    with a name and `default` (if any) for the others, each enclosed in a section.
    """
    if not greeting:
        return []
    parts, slips = parse_greeting(greeting)
    if slips:
        raise ValueError(slips[0].message)
    text = "".join(part if isinstance(part, str) else part.marker() for part in parts)
    if all(part.fallback is not None for part in parts if isinstance(part, Placeholder)):
        return [GreetingLine(Trusted(text))]
    lines = [GreetingLine(Trusted(text), when=Trusted("{{#name}}"), end=Trusted("{{/name}}"))]
    if default and default.strip():
        default_line = Trusted(guard_braces(" ".join(default.split())))
        lines.append(GreetingLine(default_line, when=Trusted("{{^name}}"), end=Trusted("{{/name}}")))
    return lines


# --- the markers in a rendered email ------------------------------------------------------------


@dataclass(frozen=True)
class Gap:
    """Where one recipient's value goes; `fallback` (already in the part's own form, e.g. HTML) when it is empty."""

    key: str
    fallback: str | None = None


@dataclass(frozen=True)
class Section:
    """Pieces only recipients with (`inverted`: without) a value for `key` get."""

    key: str
    inverted: bool
    pieces: list[str | Gap]


Piece = str | Gap | Section


def split_markers(text: str) -> list[Piece]:
    """A rendered email part as literal text, gaps and sections (not nested); ValueError for unbalanced sections."""
    pieces: list[Piece] = []
    into: list[Piece] | list[str | Gap] = pieces
    open_section: Section | None = None
    last = 0
    for found in MARKER.finditer(text):
        if found.start() > last:
            into.append(text[last : found.start()])
        last = found.end()
        sigil, section_key = found.group("sigil"), found.group("section")
        if sigil is None:
            fallback = found.group("fallback")
            into.append(Gap(found.group("key"), None if fallback is None else " ".join(fallback.split())))
        elif sigil == "/":
            if open_section is None or open_section.key != section_key:
                raise ValueError(f"{found.group()} closes no open section")
            open_section, into = None, pieces
        elif open_section is not None:
            raise ValueError(f"{found.group()} inside the section {open_section.key!r}: sections do not nest")
        else:
            open_section = Section(section_key, inverted=sigil == "^", pieces=[])
            pieces.append(open_section)
            into = open_section.pieces
    if open_section is not None:
        raise ValueError(f"a section for {open_section.key!r} is not closed")
    if last < len(text):
        into.append(text[last:])
    return pieces


def recipient_values(email: str, name: str, unsubscribe_url: str) -> dict[str, str]:
    """What fills the markers: a name that shows nothing (spaces, zero-width or format characters) is no name;
    runs of whitespace in it become one space."""
    shown_name = " ".join(name.split())
    return {"email": email, "name": shown_name if visible(shown_name) else "", "unsubscribe_url": unsubscribe_url}


def shown(key: str, inverted: bool, values: Mapping[str, str]) -> bool:
    """Whether a section is in this recipient's message: `{{#key}}` when the value is there, `{{^key}}` when not."""
    return bool(values[key]) != inverted


def fill(text: str, values: Mapping[str, str], escape: Callable[[str], str] = lambda value: value) -> str:
    """A rendered email part as one recipient reads it, as text (for a preview; sending works on bytes in message.py).

    `values` as recipient_values() makes them; `escape` is html.escape for the HTML part.
    """

    def value(gap: Gap) -> str:
        return gap.fallback if gap.fallback is not None and not values[gap.key] else escape(values[gap.key])

    out: list[str] = []
    for piece in split_markers(text):
        if isinstance(piece, Section):
            if shown(piece.key, piece.inverted, values):
                out += [part if isinstance(part, str) else value(part) for part in piece.pieces]
        else:
            out.append(piece if isinstance(piece, str) else value(piece))
    return "".join(out)
