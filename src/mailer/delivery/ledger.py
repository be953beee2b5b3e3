"""The delivery ledger: which recipient of which issue and list was sent, failed, or is still to go.

A row moves pending -> sending (claimed by one sender) -> sent | failed. A sender that dies
leaves rows in `sending`; the next run finds them abandoned (on SQLite, any it finds while it
holds the send lock; on PostgreSQL, those whose claiming connection no longer exists), sends
them again and marks them `uncertain`: they may have been accepted just before the crash.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from filelock import FileLock, Timeout
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from mailer.audience.database import SUBSCRIBED, deliveries, memberships, now, subscribers, suppressions, update_each
from mailer.audience.lists import list_id
from mailer.errors import MailerError

T = TypeVar("T")
PENDING, SENDING, SENT, FAILED, SKIPPED = "pending", "sending", "sent", "failed", "skipped"


@dataclass(frozen=True)
class Claimed:
    delivery_id: int
    subscriber_id: int
    email: str
    name: str
    attempts: int


@dataclass(frozen=True)
class Outcome:
    delivery_id: int
    sent: bool
    reply: str
    attempts: int
    permanent: bool = False
    message_id: str = ""


@dataclass
class StatusReport:
    issue: str
    list_name: str
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[str, str, bool]] = field(default_factory=list)
    uncertain: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        c = self.counts
        head = (
            f"{self.issue} to '{self.list_name}': {c.get(SENT, 0)} sent, {c.get(PENDING, 0) + c.get(SENDING, 0)} pending, "
            f"{c.get(FAILED, 0)} failed, {c.get(SKIPPED, 0)} skipped"
        )
        rows = [
            f"  failed ({'permanent' if permanent else 'temporary'}): {email}: {reply}"
            for email, reply, permanent in self.failures
        ]
        rows += [
            f"  uncertain: {email} (in flight when a send stopped; may have been delivered twice)"
            for email in self.uncertain
        ]
        return [head, *rows]


def _suppressed_or_gone(list_id_value: int) -> sa.ColumnElement[bool]:
    """The recipient of a delivery row may no longer be mailed: suppressed, or not subscribed to the list."""
    suppressed = sa.exists().where(
        subscribers.c.id == deliveries.c.subscriber_id, suppressions.c.email_key == subscribers.c.email_key
    )
    subscribed = sa.exists().where(
        memberships.c.list_id == list_id_value,
        memberships.c.subscriber_id == deliveries.c.subscriber_id,
        memberships.c.status == SUBSCRIBED,
    )
    return sa.or_(suppressed, ~subscribed)


def _serialised(method: Callable[..., T]) -> Callable[..., T]:
    """The ledger's one connection is used from worker threads; one operation at a time."""

    @functools.wraps(method)
    def wrapper(self: Ledger, *args: Any, **kwargs: Any) -> T:
        with self._guard:
            return method(self, *args, **kwargs)

    return wrapper


class Ledger:
    """One sender's view of the ledger for one issue and list; holds its connection for the whole send."""

    def __init__(self, engine: Engine, issue: str, list_name: str) -> None:
        self.engine = engine
        self.issue = issue
        self.list_name = list_name
        self.list_id = list_id(engine, list_name)
        self.postgres = engine.dialect.name == "postgresql"
        self._guard = threading.Lock()
        self._lock: FileLock | None = None
        if not self.postgres:
            self._lock = self._take_lock()
        self.conn = engine.connect()
        if self.postgres:
            pid = self.conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            self.claimant = f"pg:{pid}"
        else:
            self.claimant = f"pid:{os.getpid()}"
        self.conn.commit()

    def _take_lock(self) -> FileLock:
        """One sender per issue and list on SQLite: an OS file lock, released even if the process is killed."""
        database = self.engine.url.database or "memory"
        path = Path(f"{database}.send-{self.issue}-{self.list_name}.lock")
        lock = FileLock(path)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise MailerError(
                f"another mailer send of {self.issue} to '{self.list_name}' is running on this database ({path}); "
                "wait for it to finish (on PostgreSQL several senders share the work)"
            ) from None
        return lock

    def _where(self, *conditions: Any) -> Any:
        return sa.and_(deliveries.c.issue == self.issue, deliveries.c.list_id == self.list_id, *conditions)

    @_serialised
    def prepare(self) -> tuple[int, int]:
        """Add a pending row for everyone mailable who has none; mark those no longer mailable skipped.

        Returns (rows added, rows skipped).
        """
        stamp = now()
        mailable = (
            sa.select(
                sa.literal(self.issue),
                memberships.c.list_id,
                subscribers.c.id,
                subscribers.c.email,
                sa.literal(PENDING),
                sa.literal(stamp, sa.DateTime(timezone=True)),
            )
            .select_from(memberships.join(subscribers))
            .where(
                memberships.c.list_id == self.list_id,
                memberships.c.status == SUBSCRIBED,
                ~sa.exists().where(suppressions.c.email_key == subscribers.c.email_key),
            )
        )
        dialect = postgresql if self.postgres else sqlite
        insert = (
            dialect.insert(deliveries)
            .from_select(["issue", "list_id", "subscriber_id", "email", "status", "updated_at"], mailable)
            .on_conflict_do_nothing(index_elements=["issue", "list_id", "subscriber_id"])
        )
        added = self.conn.execute(insert).rowcount
        skipped = self.conn.execute(
            sa.update(deliveries)
            .where(self._where(deliveries.c.status.in_([PENDING, FAILED]), _suppressed_or_gone(self.list_id)))
            .values(status=SKIPPED, reply="unsubscribed or suppressed", updated_at=stamp)
        ).rowcount
        self.conn.commit()
        return added, skipped

    @_serialised
    def recover(self) -> int:
        """Rows a dead sender left in `sending`: back to pending, marked uncertain."""
        condition = deliveries.c.status == SENDING
        if self.postgres:
            alive = sa.select(sa.literal("pg:") + sa.cast(sa.column("pid"), sa.String)).select_from(
                sa.table("pg_stat_activity")
            )
            condition = sa.and_(condition, deliveries.c.claimed_by.not_in(alive))
        count = self.conn.execute(
            sa.update(deliveries).where(self._where(condition)).values(status=PENDING, uncertain=True, claimed_by="")
        ).rowcount
        self.conn.commit()
        return int(count)

    @_serialised
    def reset_failed(self, *, include_permanent: bool = False) -> int:
        condition = deliveries.c.status == FAILED
        if not include_permanent:
            condition = sa.and_(condition, deliveries.c.permanent == sa.false())
        count = self.conn.execute(
            sa.update(deliveries).where(self._where(condition)).values(status=PENDING, permanent=False)
        ).rowcount
        self.conn.commit()
        return int(count)

    @_serialised
    def pending(self) -> int:
        count = self.conn.execute(
            sa.select(sa.func.count()).where(self._where(deliveries.c.status == PENDING))
        ).scalar_one()
        self.conn.commit()
        return int(count)

    @_serialised
    def claim(self, size: int) -> list[Claimed]:
        """Take up to `size` pending rows for this sender; concurrent PostgreSQL senders skip each other's."""
        ids = (
            sa.select(deliveries.c.id)
            .where(self._where(deliveries.c.status == PENDING))
            .order_by(deliveries.c.id)
            .limit(size)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        claimed = self.conn.execute(
            sa.update(deliveries)
            .where(deliveries.c.id.in_(ids))
            .values(status=SENDING, claimed_by=self.claimant, updated_at=now())
            .returning(deliveries.c.id, deliveries.c.subscriber_id, deliveries.c.email, deliveries.c.attempts)
        ).all()
        names: dict[int, str] = {}
        if claimed:
            query = sa.select(subscribers.c.id, subscribers.c.name).where(
                subscribers.c.id.in_([row.subscriber_id for row in claimed])
            )
            names = {row.id: row.name for row in self.conn.execute(query)}
        self.conn.commit()
        return [
            Claimed(row.id, row.subscriber_id, row.email, names.get(row.subscriber_id, ""), attempts=row.attempts)
            for row in sorted(claimed, key=lambda r: r.id)
        ]

    @_serialised
    def record(self, outcomes: list[Outcome]) -> None:
        if not outcomes:
            return
        stamp = now()
        sent = [
            {"row_id": o.delivery_id, "reply_": o.reply, "attempts_": o.attempts, "mid": o.message_id, "stamp": stamp}
            for o in outcomes
            if o.sent
        ]
        failed = [
            {"row_id": o.delivery_id, "reply_": o.reply, "attempts_": o.attempts, "perm": o.permanent, "stamp": stamp}
            for o in outcomes
            if not o.sent
        ]
        outcome: dict[str, Any] = {
            "reply": sa.bindparam("reply_"),
            "attempts": sa.bindparam("attempts_"),
            "updated_at": sa.bindparam("stamp"),
        }
        if sent:
            update_each(
                self.conn,
                deliveries,
                sent,
                status=SENT,
                message_id=sa.bindparam("mid"),
                sent_at=sa.bindparam("stamp"),
                **outcome,
            )
        if failed:
            update_each(self.conn, deliveries, failed, status=FAILED, permanent=sa.bindparam("perm"), **outcome)
        self.conn.commit()

    @_serialised
    def release(self, delivery_ids: list[int]) -> None:
        """Give claimed rows that were never attempted back (an interrupted send)."""
        if delivery_ids:
            self.conn.execute(
                sa.update(deliveries).where(deliveries.c.id.in_(delivery_ids)).values(status=PENDING, claimed_by="")
            )
            self.conn.commit()

    @_serialised
    def close(self) -> None:
        self.conn.close()
        if self._lock is not None:
            self._lock.release()


def delivery_status(engine: Engine, issue: str, list_name: str) -> StatusReport:
    lid = list_id(engine, list_name)
    report = StatusReport(issue, list_name)
    where = sa.and_(deliveries.c.issue == issue, deliveries.c.list_id == lid)
    with engine.connect() as conn:
        for status, count in conn.execute(
            sa.select(deliveries.c.status, sa.func.count()).where(where).group_by(deliveries.c.status)
        ):
            report.counts[status] = count
        report.failures = [
            (row.email, row.reply, bool(row.permanent))
            for row in conn.execute(
                sa.select(deliveries.c.email, deliveries.c.reply, deliveries.c.permanent)
                .where(where, deliveries.c.status == FAILED)
                .order_by(deliveries.c.email)
            )
        ]
        report.uncertain = list(
            conn.execute(
                sa.select(deliveries.c.email)
                .where(where, deliveries.c.uncertain == sa.true())
                .order_by(deliveries.c.email)
            ).scalars()
        )
    return report


def issues_sent_to(engine: Engine, issue: str) -> list[str]:
    """The lists an issue has ledger rows for, for `mailer status` without --list."""
    from mailer.audience.database import lists

    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(lists.c.name)
                .where(sa.exists().where(deliveries.c.list_id == lists.c.id, deliveries.c.issue == issue))
                .order_by(lists.c.name)
            ).scalars()
        )
