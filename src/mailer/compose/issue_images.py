"""Local images of an issue: which files it names, prepared once per file version and display width.

An image `src` that is not an absolute URL is a path relative to the issue file (`2016-02/budapest.jpg`).
`mailer check` prepares it to validate it (so a missing, broken or oversized file is a `file:line:col` error);
the render prepares it again for free from the cache.
"""

from __future__ import annotations

import functools
import re
import stat
from collections.abc import Iterator
from pathlib import Path

from mailer.compose.images import ImageProblem, PreparedImage, prepare_image
from mailer.settings import Branding

CONTENT_WIDTH = 552
"""An image in the layout's one column: 600 px less the 24 px padding on each side."""
SOCIAL_ICON_WIDTH = 24
LOCAL_PATH = re.compile(r"(?![/\\])(?!.*(?:^|/)\.\.(?:/|$))[^\\\x00-\x1f?#]+")
"""A relative path inside the issue's folder: not absolute, no `..`, no backslashes, no query."""


def is_local(src: str) -> bool:
    return not src.lower().startswith(("http://", "https://"))


def check_local_path(src: str) -> str:
    if not LOCAL_PATH.fullmatch(src) or ":" in src.split("/", 1)[0]:
        raise ValueError(
            f"must be an absolute http(s) URL or a path relative to the issue file, inside its folder, got {src!r}"
        )
    return src


@functools.lru_cache(maxsize=256)
def _prepared(path: Path, stamp: tuple[int, int], display_width: int) -> PreparedImage:
    return prepare_image(path, display_width)


def prepared(path: Path, display_width: int = CONTENT_WIDTH) -> PreparedImage:
    """The prepared image, from the cache while the file is unchanged (same size and modification time)."""
    try:
        status = path.stat()
        stamp = (status.st_mtime_ns, status.st_size)
    except OSError:
        stamp = (0, 0)  # prepare_image says what is wrong
    else:
        if not stat.S_ISREG(status.st_mode) and not stat.S_ISDIR(status.st_mode):
            raise ImageProblem(path, "not a regular file (a pipe or a device would never end)")
    return _prepared(path, stamp, display_width)


def branding_images(branding: Branding) -> Iterator[tuple[str, Path, int, str]]:
    """(src, file, display width, setting) of the logo and social icons that are local files."""
    if branding.logo is not None and is_local(branding.logo.src):
        yield branding.logo.src, Path(branding.logo.src), branding.logo.width, "branding.logo.src"
    for number, account in enumerate(branding.social):
        if is_local(account.icon):
            yield account.icon, Path(account.icon), SOCIAL_ICON_WIDTH, f"branding.social[{number}].icon"


def local_images(issue: object) -> Iterator[tuple[str, Path]]:
    """(src as written, file) of every local image of an issue, in document order, each once."""
    from mailer.compose.model import Image, Issue

    assert isinstance(issue, Issue)
    seen: set[str] = set()
    sections = [issue.spotlight, issue.news, issue.other_news, issue.publications]
    for section in sections:
        if section is None:
            continue
        items = list(getattr(section, "stories", None) or getattr(section, "items", None) or [])
        holders = ([section] if hasattr(section, "image") else []) + items
        for holder in holders:
            image = getattr(holder, "image", None)
            if isinstance(image, Image) and image.file is not None and image.src not in seen:
                seen.add(image.src)
                yield image.src, image.file
