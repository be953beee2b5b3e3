"""The one URL rule of every email: absolute http(s) or mailto, nothing a mail client must guess."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field

URL_PATTERN = r"^(https?://[^\s/?#]+[^\s]*|mailto:[^\s]+@[^\s]+)$"


def check_absolute_url(value: str) -> str:
    if any(ch.isspace() for ch in value):
        raise ValueError(f"a URL cannot contain spaces, got {value!r}")
    parts = urlsplit(value)
    if parts.scheme in ("http", "https") and parts.hostname:
        return value
    if parts.scheme == "mailto" and "@" in parts.path:
        return value
    raise ValueError(f"must be an absolute http(s) or mailto URL, got {value!r}")


Url = Annotated[
    str,
    AfterValidator(check_absolute_url),
    Field(
        json_schema_extra={"format": "uri", "pattern": URL_PATTERN},
        description="An absolute http(s) or mailto URL.",
    ),
]
