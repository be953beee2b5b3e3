"""The issues folder: which files are issues, which of them are valid, and which is newest.

The one scanner every command uses (send without a file, draft --since last-issue, the
preview of all issues, the archive and publish), so they all agree on what "newest" means:
the latest `date:` in the file, then the file name; never the file name alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from mailer.compose.load import MAX_ISSUE_BYTES, load_issue
from mailer.compose.model import Issue
from mailer.errors import MailerError

RESERVED_SLUGS = frozenset({"feed.xml", "index.html", "subscribe", "unsubscribe", "confirm"})
"""Names the archive's own pages and the web app's routes use; an issue file cannot take them."""
_SLUG = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,99}")


def slug_of(path: Path) -> str:
    """An issue's name in URLs and output folders: its file name without .yaml."""
    return path.stem


def is_slug(slug: str) -> bool:
    """A name safe as one URL path segment and one file name: no '/', no '..', no hidden files."""
    return _SLUG.fullmatch(slug) is not None and slug not in RESERVED_SLUGS


def bad_name(path: Path) -> str:
    """Why an issue file's name cannot be its web address (<public_url>/<slug>/)."""
    return (
        f"{path}: {slug_of(path)!r} cannot be a web address; name issue files with at most 100 letters, digits, "
        f"'.', '_' and '-', not starting with '.' and not {', '.join(sorted(RESERVED_SLUGS))}"
    )


def file_stamp(path: Path) -> tuple[int, int] | None:
    """(mtime in ns, size) of a file, or None if it cannot be read: what a cached parse is keyed on."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size


@lru_cache(maxsize=256)
def _load(path: Path, mtime_ns: int, size: int, max_bytes: int) -> Issue | tuple[str, ...]:
    try:
        return load_issue(path, max_bytes=max_bytes)
    except MailerError as error:
        return tuple(error.lines())


def load_cached(
    path: Path, stamp: tuple[int, int] | None = None, *, max_bytes: int = MAX_ISSUE_BYTES
) -> Issue | tuple[str, ...]:
    """The issue in a file, or its problems as lines; each version (`file_stamp`) of a file is parsed once."""
    stamp = stamp or file_stamp(path)
    if stamp is None:
        return (f"{path}: cannot read",)
    return _load(path, *stamp, max_bytes)


@dataclass(frozen=True)
class IssueFile:
    path: Path
    issue: Issue

    @property
    def slug(self) -> str:
        return slug_of(self.path)


@dataclass(frozen=True)
class IssuesScan:
    """Valid issues newest first; the files that are not, with one line per problem."""

    folder: Path
    issues: list[IssueFile]
    broken: list[Path]
    problems: list[str]

    def newest(self) -> IssueFile:
        """The issue with the latest date; refused while any file is broken, since it might be the newest."""
        if self.problems:
            raise MailerError(
                "\n".join(
                    [
                        *self.problems,
                        f"{self.folder}: cannot tell which issue is newest; fix the files above or name the issue file",
                    ]
                )
            )
        if not self.issues:
            raise MailerError(f"{self.folder}: no issue files; name one, e.g. {self.folder / '2016-02.yaml'}")
        return self.issues[0]


def issue_paths(folder: Path) -> list[Path]:
    """Every *.yaml file of the folder that is meant as an issue (editors' hidden files are not), by name."""
    if not folder.is_dir():
        raise MailerError(f"{folder}: no such folder of issues; set issues_dir to the folder holding the *.yaml files")
    return sorted(path for path in folder.glob("*.yaml") if not path.name.startswith("."))


def scan_issues(folder: Path, *, max_bytes: int = MAX_ISSUE_BYTES) -> IssuesScan:
    """Sort the folder into valid issues (newest date first) and broken files; one broken file never hides others."""
    issues: list[IssueFile] = []
    broken: list[Path] = []
    problems: list[str] = []
    for path in issue_paths(folder):
        if not is_slug(slug_of(path)):
            broken.append(path)
            problems.append(bad_name(path))
            continue
        loaded = load_cached(path, max_bytes=max_bytes)
        if isinstance(loaded, tuple):
            broken.append(path)
            problems.extend(loaded)
            continue
        issues.append(IssueFile(path, loaded))
    issues.sort(key=lambda found: (found.issue.date, found.slug), reverse=True)
    return IssuesScan(folder, issues, broken, problems)
