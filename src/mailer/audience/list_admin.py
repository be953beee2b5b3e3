"""Deleting and renaming a list, keeping what must outlive it: subscribers, suppressions and (unless forced)
the send history."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from mailer.audience.database import deliveries, delivery_events, lists, memberships
from mailer.audience.lists import check_list_name, list_id_in
from mailer.errors import MailerError
from mailer.wording import plural


@dataclass(frozen=True)
class ListContents:
    """What deleting a list would take with it: its memberships and, only with force, its send history."""

    name: str
    subscribers: int
    deliveries: int
    issues: list[str]
    force: bool

    def question(self) -> str:
        history = f" and the send history of {plural(len(self.issues), 'issue')}" if self.deliveries else ""
        return f"Delete list '{self.name}' with {plural(self.subscribers, 'subscriber')}{history}?"

    def summary(self) -> str:
        done = f"deleted list '{self.name}' ({plural(self.subscribers, 'membership')})"
        if self.deliveries:
            done += f" and its send history ({plural(self.deliveries, 'delivery', 'deliveries')} of {self._issues()})"
        return done + "; subscribers, suppressions and events stay"

    def refuse_without_force(self) -> None:
        if self.deliveries and not self.force:
            raise MailerError(
                f"list '{self.name}' has the send history of {plural(len(self.issues), 'issue')} ({self._issues()}); "
                "deleting the list deletes it, and its people could then get those issues again through another list: "
                "keep the list (mailer lists rename), or pass --force to delete it with its history"
            )

    def _issues(self) -> str:
        shown = ", ".join(self.issues[:5])
        return shown + (f" and {len(self.issues) - 5} more" if len(self.issues) > 5 else "")


def _contents(conn: Connection, lid: int, name: str, force: bool) -> ListContents:
    members = conn.execute(
        sa.select(sa.func.count()).select_from(memberships).where(memberships.c.list_id == lid)
    ).scalar_one()
    rows, issues = 0, []
    for issue, count in conn.execute(
        sa.select(deliveries.c.issue, sa.func.count())
        .where(deliveries.c.list_id == lid)
        .group_by(deliveries.c.issue)
        .order_by(deliveries.c.issue.desc())
    ):
        rows += count
        issues.append(issue)
    return ListContents(name, int(members), rows, issues, force)


def list_contents(engine: Engine, name: str, *, force: bool = False) -> ListContents:
    """What `delete_list` would delete, to ask first; refused as delete_list would refuse it."""
    with engine.connect() as conn:
        contents = _contents(conn, list_id_in(conn, name), name, force)
    contents.refuse_without_force()
    return contents


def delete_list(engine: Engine, name: str, *, force: bool = False) -> ListContents:
    """Delete a list and its memberships; its deliveries (the send history) only with `force`.

    Subscribers, suppressions and delivery events stay (events keep no list, as the schema says).
    """
    with engine.begin() as conn:
        lid = list_id_in(conn, name)
        contents = _contents(conn, lid, name, force)
        contents.refuse_without_force()
        conn.execute(sa.delete(memberships).where(memberships.c.list_id == lid))
        conn.execute(sa.delete(deliveries).where(deliveries.c.list_id == lid))
        conn.execute(sa.update(delivery_events).where(delivery_events.c.list_id == lid).values(list_id=None))
        conn.execute(sa.delete(lists).where(lists.c.id == lid))
    return contents


def rename_list(engine: Engine, old: str, new: str) -> bool:
    """Give a list a new name; its id, and with it the send history and signed unsubscribe links, stay.

    Returns whether the list is public (its subscribe page moves to the new name).
    """
    check_list_name(new)
    try:
        with engine.begin() as conn:
            lid = list_id_in(conn, old)
            if conn.execute(sa.select(lists.c.id).where(lists.c.name == new)).first():
                raise MailerError(f"list '{new}' already exists")
            conn.execute(sa.update(lists).where(lists.c.id == lid).values(name=new))
            public = conn.execute(sa.select(lists.c.public).where(lists.c.id == lid)).scalar_one()
    except IntegrityError:  # taken by someone else between the check and the update
        raise MailerError(f"list '{new}' already exists") from None
    return bool(public)
