"""What may go to a list: never a draft, never an issue dated later unless the sender insists."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from mailer.compose.load import load_issue
from mailer.compose.model import Issue
from mailer.errors import MailerError
from mailer.settings import Settings


def refuse_unsendable(path: Path, issue: Issue, *, today: dt.date, force: bool = False) -> None:
    """A draft is refused outright (mark it ready in the file); a later date unless `force`."""
    if issue.is_draft:
        raise MailerError(
            f"{path}: status: draft; a draft goes only to test addresses (--to) and --dry-run. "
            "When it is ready, set status: ready in the file and send again"
        )
    if issue.date > today and not force:
        raise MailerError(
            f'{path}: dated {issue.date.isoformat()}, after today: its web version (the "view in browser" link) '
            "is not published until then; send it on or after that day, or pass --force to send it now "
            "(sending publishes it at once)"
        )


def sendable_issue(path: Path, settings: Settings, *, today: dt.date | None = None, force: bool = False) -> Issue:
    """The issue in the file, if it may go to a list today."""
    issue = load_issue(path, max_bytes=settings.max_issue_bytes)
    refuse_unsendable(path, issue, today=today or dt.date.today(), force=force)
    return issue
