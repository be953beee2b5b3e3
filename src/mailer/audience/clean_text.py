"""Names and attributes as lists hold them: one line of plain text, whoever typed it and however it arrived.

A subscriber's name goes into a To header, a greeting, a CSV cell and a terminal line, so none of
it may break a line or a header, or reorder what is shown around it. `clean_text` is the one rule,
applied by every way in (`subscribers add`, CSV import, the web subscribe form) and to every header
value on the way out: line breaks and tabs become a space, other control characters vanish, runs
of whitespace become one space, and the ends are trimmed.
"""

from __future__ import annotations

_LINE_BREAKS = "\t\n\v\f\r\x85\u2028\u2029"
"""Tab, then every character Unicode counts as a mandatory line break (CR, LF, VT, FF, NEL, LS, PS)."""

_BIDI_CONTROLS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
"""Embeddings, overrides and isolates: they reorder the text shown after them ('Trojan Source').

The direction marks (U+200E, U+200F, U+061C) stay: they only settle neutral characters, and
names in Arabic or Hebrew need them.
"""

_CLEANING = str.maketrans(
    {
        **{code: None for code in (*range(0x20), 0x7F, *range(0x80, 0xA0))},
        **{ord(char): None for char in _BIDI_CONTROLS},
        **{ord(char): " " for char in _LINE_BREAKS},
    }
)


def clean_text(text: str) -> str:
    """`text` as one line: breaks and tabs to spaces, other C0/C1 controls and bidi overrides dropped, spaces collapsed.

    Every Unicode space (no-break, ideographic...) counts as whitespace and becomes one U+0020.
    """
    return " ".join(text.translate(_CLEANING).split())
