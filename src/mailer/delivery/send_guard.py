"""What may go to a list: never a draft, never an issue dated later unless the sender insists,
and only a file the archive publishes, so the "view in browser" link of every message works."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from mailer.compose.issues_folder import issue_paths
from mailer.compose.model import Issue
from mailer.errors import MailerError


@dataclass(frozen=True)
class SendGuard:
    issues_dir: Path
    force: bool = False
    """Send an issue dated later than today now."""
    today: dt.date = field(default_factory=dt.date.today)

    def check(self, path: Path, issue: Issue) -> None:
        """A draft is refused outright (mark it ready in the file); a later date unless forced; a file elsewhere."""
        if issue.is_draft:
            raise MailerError(
                f"{path}: status: draft; a draft goes only to test addresses (--to) and --dry-run. "
                "When it is ready, set status: ready in the file and send again"
            )
        if issue.date > self.today and not self.force:
            raise MailerError(
                f'{path}: dated {issue.date.isoformat()}, after today: its web version (the "view in browser" link) '
                "is not published until then; send it on or after that day, or pass --force to send it now "
                "(sending publishes it at once)"
            )
        if not self.published_from(path):
            raise MailerError(
                f"{path}: not one of the issue files in {self.issues_dir}/ (NAME.yaml), which are the ones the archive "
                f'publishes: its "view in browser" link would not work; move it to {self.issues_dir}/ or set issues_dir'
            )

    def published_from(self, path: Path) -> bool:
        try:
            return path.resolve() in {found.resolve() for found in issue_paths(self.issues_dir)}
        except MailerError:
            return False
