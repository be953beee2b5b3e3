"""Counts in messages: "1 issue", "2 issues", "1,234 recipients"."""

from __future__ import annotations


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """The count, grouped by thousands, with the noun in the form it takes."""
    noun = singular if count == 1 else (plural_form or f"{singular}s")
    return f"{count:,} {noun}"
