"""The issues folder: which files are issues, which are valid, ready, public, and which is newest.

The one scanner every command uses (send without a file, draft --since last-issue, the
preview of all issues, the archive and publish), so they all agree on what "newest" means:
the latest `date:` in the file, then the file name; never the file name alone.

What went out to which list lives in the ledger, below this layer: callers pass the issue
names it holds (`sent`), and the scanner decides with them.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection
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

    @property
    def label(self) -> str:
        """How a question or a message names it: 2016-02 'February 2016 Monthly Update'."""
        return f"{self.slug} {self.issue.title!r}"

    def public(self, today: dt.date, sent: Collection[str]) -> bool:
        """On the archive: ready and its date has come, or it went out to a list (its emails link to it)."""
        return self.slug in sent or (not self.issue.is_draft and self.issue.date <= today)


@dataclass(frozen=True)
class IssuesScan:
    """Valid issues newest first; the files that are not, with one line per problem."""

    folder: Path
    issues: list[IssueFile]
    broken: list[Path]
    problems: list[str]

    @property
    def ready(self) -> list[IssueFile]:
        """Valid issues not marked `status: draft`, newest first."""
        return [found for found in self.issues if not found.issue.is_draft]

    def unpublished(self, today: dt.date) -> list[IssueFile]:
        """Drafts and issues dated later: hidden from the archive unless they went out to a list."""
        return [found for found in self.issues if not found.public(today, ())]

    def public(self, today: dt.date, sent: Collection[str] = ()) -> list[IssueFile]:
        """What the archive shows, newest first: ready issues whose date has come, and every issue that went out."""
        return [found for found in self.issues if found.public(today, sent)]

    def refuse_to_guess(self, what: str) -> None:
        """Picking by date is refused while any file is broken (the broken one might be the one wanted) or none is there."""
        if self.problems:
            raise MailerError(
                "\n".join(
                    [*self.problems, f"{self.folder}: cannot tell {what}; fix the files above or name the issue file"]
                )
            )
        if not self.issues:
            raise MailerError(f"{self.folder}: no issue files; name one, e.g. {self.folder / '2016-02.yaml'}")

    def newest(self) -> IssueFile:
        """The valid issue with the latest date, drafts included (test sends proofread them)."""
        self.refuse_to_guess("which issue is newest")
        return self.issues[0]

    def next_to_send(
        self,
        list_name: str,
        sent_to_list: Collection[str],
        *,
        unfinished: Collection[str] = (),
        today: dt.date,
        force: bool = False,
    ) -> IssueFile:
        """What `mailer send --list NAME` sends without a file.

        The last issue the list was sent, again, while it has rows left to send (a send that was
        interrupted resumes); else the newest ready issue newer than it, dated today or before
        (`force`: or later). Never an older issue the list missed: sending that is a decision to
        make by naming its file.
        """
        self.refuse_to_guess(f"which issue to send to {list_name}")
        went = [found for found in self.issues if found.slug in sent_to_list]
        last = went[0] if went else None
        if last is not None and last.slug in unfinished:
            return last

        def newer(found: IssueFile) -> bool:
            return last is None or (found.issue.date, found.slug) > (last.issue.date, last.slug)

        candidates = [found for found in self.ready if newer(found)]
        due = [found for found in candidates if force or found.issue.date <= today]
        if due:
            return due[0]
        waiting = [
            *(f"{found.slug}: status: draft" for found in self.issues if found.issue.is_draft and newer(found)),
            *(
                f"{found.slug}: dated {found.issue.date.isoformat()}, --force sends it now"
                for found in candidates
                if found not in due
            ),
        ]
        note = f" ({'; '.join(waiting)})" if waiting else ""
        if last is None:
            raise MailerError(f"{self.folder}: no ready issue to send to {list_name}{note}; name the issue file")
        raise MailerError(
            f"nothing new to send to {list_name}: the last issue it was sent is {last.label}{note}; "
            "name an issue file to send another"
        )


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
