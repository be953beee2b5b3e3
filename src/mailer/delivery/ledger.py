"""The delivery ledger: which recipient of which issue and list was sent, failed, or is still to go.

A row moves pending -> sending (claimed by one sender) -> sent | failed | uncertain, or to skipped
when its recipient may no longer be mailed (checked when rows are added and again when each batch
is claimed). `uncertain` means the whole message was written and no reply came: it may have been
delivered, so it is held until `--retry-uncertain`.

One copy per person: of the rows of one issue and one person, at most one is not skipped and not an allowed
duplicate (a partial unique index, uq_deliveries_one_copy). A send adds its rows with ON CONFLICT DO NOTHING,
so a concurrent sender to an overlapping list makes it skip a row rather than add a second copy; those people
get a `skipped` row naming the list that covers them (`covered_by`). If that list's row is skipped later (they
left it), the covered row goes back to pending on the next run. `allow_duplicates` adds rows for everyone.

A claim is a lease: `claimed_until`, renewed by the sender's heartbeat. A sender that dies leaves
rows in `sending`; once their lease lapses (on SQLite, at the start of the next run, which holds the
send lock) they go out again flagged `uncertain = true`: they may have been accepted just before
the crash. Leases need no session state, no advisory lock and no backend pid, so they work
through PgBouncer in transaction mode.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from filelock import FileLock, Timeout
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal

from mailer.audience.database import (
    SUBSCRIBED,
    deliveries,
    lists,
    memberships,
    now,
    subscribers,
    suppressions,
)
from mailer.audience.driver_statement import DriverStatement
from mailer.audience.lists import list_id
from mailer.delivery.bounces import record_refusals
from mailer.errors import ExitStatus, MailerError

T = TypeVar("T")
PENDING, SENDING, SENT, FAILED, SKIPPED = "pending", "sending", "sent", "failed", "skipped"
UNCERTAIN = "uncertain"
GONE = "unsubscribed or suppressed"
"""The reply of a row skipped because its recipient may no longer be mailed."""
COVERED = "gets it through '{}'"
"""The reply of a row skipped because another list's row holds the person's copy of the issue."""
SQLITE_SYNCHRONOUS = "FULL"
"""The ledger connection's PRAGMA synchronous on SQLite: FULL syncs the WAL at every commit, so a claim survives a power cut."""
RECONNECT_DELAYS = (0.2, 1.0, 3.0)


class LedgerError(MailerError):
    """The ledger's database went away and did not come back: the send stops, what was recorded stays."""

    exit_status = ExitStatus.DELIVERY_FAILED


@dataclass(frozen=True)
class Claimed:
    """A row this sender holds: who gets the message, and whether an earlier try may already have arrived."""

    delivery_id: int
    subscriber_id: int
    email: str
    name: str
    attempts: int
    uncertain: bool = False


@dataclass(frozen=True)
class Batch:
    """One claim: the rows to send, and how many claimed rows turned out no longer mailable."""

    rows: list[Claimed]
    skipped: int = 0


@dataclass(frozen=True)
class Prepared:
    """What prepare() changed: rows added, skipped as no longer mailable, skipped as covered by another list, revived."""

    added: int = 0
    skipped: int = 0
    covered: int = 0
    revived: int = 0


@dataclass(frozen=True)
class Outcome:
    delivery_id: int
    sent: bool
    reply: str
    attempts: int
    permanent: bool = False
    message_id: str = ""
    uncertain: bool = False


class _Qualified(sa.ColumnElement[Any]):
    """An expression whose columns keep their table, even inside SQLite's RETURNING.

    SQLAlchemy 2.0 writes every column of SQLite's RETURNING without its table, subqueries
    included, so `subscribers.id = deliveries.subscriber_id` would become `id = subscriber_id`:
    the subquery's own column on both sides.
    """

    inherit_cache = True
    _traverse_internals = [("element", InternalTraversal.dp_clauseelement)]

    def __init__(self, element: sa.ColumnElement[Any]) -> None:
        self.element = element
        self.type = element.type


@compiles(_Qualified)
def _compile_qualified(qualified: _Qualified, compiler: SQLCompiler, **kw: Any) -> str:
    kw.pop("include_table", None)
    return compiler.process(qualified.element, **kw)


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


def _copy_elsewhere(issue: str, list_id_value: int, subscriber_id: sa.ColumnElement[int]) -> sa.Exists:
    """Another list's row of this issue for this person that is not skipped: they have, or are getting, their copy."""
    other = deliveries.alias("other")
    return sa.exists().where(
        other.c.issue == issue,
        other.c.subscriber_id == subscriber_id,
        other.c.list_id != list_id_value,
        other.c.status != SKIPPED,
    )


def _covering(issue: str, list_id_value: int, subscriber_id: sa.ColumnElement[int]) -> sa.ScalarSelect[int]:
    """The id of the list through which this person has their copy: its row holding the copy, else the oldest."""
    other = deliveries.alias("covering")
    return (
        sa.select(other.c.list_id)
        .where(
            other.c.issue == issue,
            other.c.subscriber_id == subscriber_id,
            other.c.list_id != list_id_value,
            other.c.status != SKIPPED,
        )
        .order_by(other.c.allow_duplicate, other.c.id)
        .limit(1)
        .scalar_subquery()
    )


def copies_elsewhere(engine: Engine, issue: str, list_id_value: int) -> set[int]:
    """The subscribers who have, or are getting, the issue through a list other than this one (for the dry run)."""
    with engine.connect() as conn:
        query = sa.select(deliveries.c.subscriber_id).where(
            deliveries.c.issue == issue, deliveries.c.list_id != list_id_value, deliveries.c.status != SKIPPED
        )
        return set(conn.execute(query).scalars())


def _serialised(method: Callable[..., T]) -> Callable[..., T]:
    """The ledger's one connection is used from worker threads, one operation at a time.

    A connection the database dropped (a restart, pg_terminate_backend, a proxy) is replaced and the
    operation run again: every operation is one transaction and safe to repeat. When the database
    stays away, LedgerError: one line, not a driver traceback.
    """

    @functools.wraps(method)
    def wrapper(self: Ledger, *args: Any, **kwargs: Any) -> T:
        with self._guard:
            for delay in (*RECONNECT_DELAYS, None):
                try:
                    return method(self, *args, **kwargs)
                except (sa.exc.OperationalError, sa.exc.InterfaceError) as error:
                    if delay is None:
                        raise self._gone(error) from None
                    time.sleep(delay)
                    self._reconnect()
            raise AssertionError("unreachable")

    return wrapper


class Ledger:
    """One sender's view of the ledger for one issue and list; holds its connection for the whole send."""

    def __init__(
        self,
        engine: Engine,
        issue: str,
        list_name: str,
        *,
        lease_seconds: float = 60.0,
        allow_duplicates: bool = False,
    ) -> None:
        self.engine = engine
        self.issue = issue
        self.list_name = list_name
        self.allow_duplicates = allow_duplicates
        self.lease = dt.timedelta(seconds=lease_seconds)
        self.list_id = list_id(engine, list_name)
        self.postgres = engine.dialect.name == "postgresql"
        self.claimant = f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._guard = threading.Lock()
        self._cursor = 0
        """The highest id this sender claimed: the next claim of pending rows starts after it."""
        self._claims: dict[str, DriverStatement] = {}
        self._outcomes: dict[str, DriverStatement] = {}
        self._lock: FileLock | None = None
        if not self.postgres:
            self._lock = self._take_lock()
        try:
            self.conn = self._connect()
        except LedgerError:
            if self._lock is not None:
                self._lock.release()
            raise

    def _connect(self) -> sa.Connection:
        try:
            conn = self.engine.connect()
            if not self.postgres:
                conn.exec_driver_sql(f"PRAGMA synchronous = {SQLITE_SYNCHRONOUS}")
            conn.commit()
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as error:
            raise self._gone(error) from None
        return conn

    def _reconnect(self) -> None:
        try:
            self.conn.invalidate()
            self.conn.close()
        except sa.exc.SQLAlchemyError:
            pass
        try:
            self.conn = self.engine.connect()
        except (sa.exc.OperationalError, sa.exc.InterfaceError):
            return  # the next attempt fails again, and the last one reports it
        if not self.postgres:
            self.conn.exec_driver_sql(f"PRAGMA synchronous = {SQLITE_SYNCHRONOUS}")
            self.conn.commit()

    def _gone(self, error: sa.exc.DBAPIError) -> LedgerError:
        reason = (str(error.orig).strip().splitlines() or [type(error.orig).__name__])[0] if error.orig else str(error)
        where = self.engine.url.render_as_string(hide_password=True)
        return LedgerError(
            f"database {where}: {reason}; the ledger keeps every outcome recorded so far: "
            "run the same command again to send the rest"
        )

    def _take_lock(self) -> FileLock:
        """One sender per issue and list on SQLite: an OS file lock, released even if the process is killed."""
        database = self.engine.url.database or "memory"
        digest = hashlib.sha256(f"{self.issue}\0{self.list_name}".encode()).hexdigest()[:16]
        path = Path(f"{database}.send-{digest}.lock")  # any issue name fits in a file name
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

    def _now(self) -> Any:
        """The database's clock on PostgreSQL (senders on several machines agree on it), this machine's on SQLite."""
        if self.postgres:
            return sa.func.statement_timestamp()
        return sa.literal(now(), sa.DateTime(timezone=True))

    def _lease_end(self) -> Any:
        if self.postgres:
            return sa.func.statement_timestamp() + sa.literal(self.lease, sa.Interval)
        return sa.literal(now() + self.lease, sa.DateTime(timezone=True))

    def _abandoned(self) -> Any:
        """Rows in `sending` nobody looks after: lease lapsed (PostgreSQL); on SQLite, all, since this sender holds the lock."""
        if self.postgres:
            return sa.and_(
                deliveries.c.status == SENDING,
                sa.or_(deliveries.c.claimed_until.is_(None), deliveries.c.claimed_until < self._now()),
            )
        return deliveries.c.status == SENDING

    @_serialised
    def recover(self) -> int:
        """Abandoned rows back to pending, flagged uncertain; run before prepare() so its suppression check covers them."""
        count = self.conn.execute(
            sa.update(deliveries)
            .where(self._where(self._abandoned()))
            .values(status=PENDING, uncertain=True, claimed_by="", claimed_until=None)
        ).rowcount
        self.conn.commit()
        return int(count)

    @_serialised
    def prepare(self) -> Prepared:
        """Add a pending row for everyone mailable who has none, or a skipped one naming the list that covers them.

        Then mark rows no longer mailable skipped, and revive covered rows whose cover went away. The pending rows
        go in with ON CONFLICT DO NOTHING: the one-copy index, not the NOT EXISTS that spares most of the work,
        is what keeps a concurrent sender to an overlapping list from adding a second copy. Rows go in ordered by
        subscriber, so two senders waiting on each other's rows cannot deadlock.
        """
        stamp = now()
        here = deliveries.alias("here")
        without_row = sa.and_(
            memberships.c.list_id == self.list_id,
            memberships.c.status == SUBSCRIBED,
            ~sa.exists().where(suppressions.c.email_key == subscribers.c.email_key),
            ~sa.exists().where(
                here.c.issue == self.issue, here.c.list_id == self.list_id, here.c.subscriber_id == subscribers.c.id
            ),
        )
        added = self._add_pending(
            sa.and_(without_row, ~_copy_elsewhere(self.issue, self.list_id, subscribers.c.id)), stamp
        )
        covered = 0
        if self.allow_duplicates:
            added += self._add_pending(without_row, stamp, allow_duplicate=True)
        else:
            covered = self._add_covered(without_row, stamp)
        skipped = self.conn.execute(
            sa.update(deliveries)
            .where(self._where(deliveries.c.status.in_([PENDING, FAILED]), _suppressed_or_gone(self.list_id)))
            .values(status=SKIPPED, reply=GONE, updated_at=stamp)
        ).rowcount
        self.conn.commit()
        revived = self._revive(stamp)
        if self.postgres and added + covered:
            self._analyze()
        return Prepared(added, skipped, covered, revived)

    def _analyze(self) -> None:
        """Fresh planner statistics for the tables each claim reads (PostgreSQL).

        Until autovacuum gets to them, rows just imported or added look like none to the planner,
        and it checks each claimed row's membership by walking the list's members from the start
        instead of looking it up: each claim slower than the one before (15 ms after 20,000 rows,
        against 2 ms). ANALYZE reads a fixed-size sample, a fraction of a second on a million rows.
        """
        for table in (subscribers, memberships, deliveries):
            self.conn.exec_driver_sql(f"ANALYZE {table.name}")
        self.conn.commit()

    def _insert(self, columns: list[str], rows: sa.Select[Any]) -> int:
        """INSERT ... SELECT, ignoring rows that would break any unique index: no conflict target, so the partial one counts."""
        dialect = postgresql if self.postgres else sqlite
        insert = dialect.insert(deliveries).from_select(columns, rows).on_conflict_do_nothing()
        return int(self.conn.execute(insert.execution_options(preserve_rowcount=True)).rowcount)

    def _members(self, condition: Any, *values: Any) -> sa.Select[Any]:
        return (
            sa.select(sa.literal(self.issue), memberships.c.list_id, subscribers.c.id, subscribers.c.email, *values)
            .select_from(memberships.join(subscribers))
            .where(condition)
            .order_by(subscribers.c.id)
        )

    def _add_pending(self, condition: Any, stamp: dt.datetime, *, allow_duplicate: bool = False) -> int:
        rows = self._members(
            condition,
            sa.literal(PENDING),
            sa.literal(stamp, sa.DateTime(timezone=True)),
            sa.literal(allow_duplicate, sa.Boolean),
        )
        columns = ["issue", "list_id", "subscriber_id", "email", "status", "updated_at", "allow_duplicate"]
        return self._insert(columns, rows)

    def _add_covered(self, condition: Any, stamp: dt.datetime) -> int:
        """A skipped row for each person another list has given (or is giving) the issue, naming that list."""
        rows = self._members(
            condition,
            sa.literal(SKIPPED),
            sa.literal(stamp, sa.DateTime(timezone=True)),
            lists.c.id,
            sa.func.replace(sa.literal(COVERED), "{}", lists.c.name),
        ).join(lists, lists.c.id == _covering(self.issue, self.list_id, subscribers.c.id))
        return self._insert(
            ["issue", "list_id", "subscriber_id", "email", "status", "updated_at", "covered_by", "reply"], rows
        )

    def _revive(self, stamp: dt.datetime) -> int:
        """Covered rows whose cover went away (that row was skipped: the person left the list) back to pending.

        Only rows whose recipient may still be mailed through this list. With allow_duplicates every covered row
        comes back, as an allowed duplicate where a copy exists elsewhere. A concurrent sender may take the copy
        first (PostgreSQL: a unique violation): then the rows are tried one by one, and a row that still collides
        stays covered until the next run looks again.
        """
        elsewhere = _copy_elsewhere(self.issue, self.list_id, deliveries.c.subscriber_id)
        condition = self._where(
            deliveries.c.status == SKIPPED, deliveries.c.covered_by.is_not(None), ~_suppressed_or_gone(self.list_id)
        )
        if not self.allow_duplicates:
            condition = sa.and_(condition, ~elsewhere)
        revive = sa.update(deliveries).values(
            status=PENDING,
            covered_by=None,
            reply="",
            updated_at=stamp,
            allow_duplicate=elsewhere if self.allow_duplicates else sa.false(),
        )
        try:
            count = int(self.conn.execute(revive.where(condition)).rowcount)
            self.conn.commit()
            return count
        except sa.exc.IntegrityError:
            self.conn.rollback()
        ids = list(self.conn.execute(sa.select(deliveries.c.id).where(condition)).scalars())
        self.conn.commit()
        count = 0
        for row_id in ids:
            try:
                count += self.conn.execute(revive.where(condition, deliveries.c.id == row_id)).rowcount
                self.conn.commit()
            except sa.exc.IntegrityError:
                self.conn.rollback()
        return count

    def _back_to_pending(self, condition: Any, **values: Any) -> int:
        count = self.conn.execute(
            sa.update(deliveries).where(self._where(condition)).values(status=PENDING, **values)
        ).rowcount
        self.conn.commit()
        return int(count)

    @_serialised
    def reset_failed(self, *, include_permanent: bool = False) -> int:
        condition = deliveries.c.status == FAILED
        if not include_permanent:
            condition = sa.and_(condition, deliveries.c.permanent == sa.false())
        return self._back_to_pending(condition, permanent=False)

    @_serialised
    def reset_uncertain(self) -> int:
        """Held uncertain rows back to pending, on purpose (--retry-uncertain): flagged, they may arrive twice."""
        return self._back_to_pending(deliveries.c.status == UNCERTAIN, uncertain=True)

    @_serialised
    def pending(self) -> int:
        count = self.conn.execute(
            sa.select(sa.func.count()).where(self._where(deliveries.c.status == PENDING))
        ).scalar_one()
        self.conn.commit()
        return int(count)

    @_serialised
    def claim(self, size: int) -> Batch:
        """Take up to `size` rows for this sender: pending ones, and (PostgreSQL) those whose lease lapsed.

        One UPDATE ... RETURNING per batch: the next pending rows in id order straight from
        ix_deliveries_issue_list_status_id, returned with each recipient's name and whether they
        may still be mailed. Rows whose recipient unsubscribed, was suppressed or left the list
        since the send began become skipped here, at claim time (a second statement, only then).
        Concurrent PostgreSQL senders skip each other's rows; abandoned rows (lease lapsed) are
        claimed when pending ones run short.
        """
        skipped = 0
        while True:
            claimed = self._take_pending(size)
            if self.postgres and len(claimed) < size:
                claimed += self._take("abandoned", size - len(claimed))
            if not claimed:
                self.conn.commit()
                return Batch([], skipped)
            gone = [row.id for row in claimed if row.gone]
            if gone:
                self.conn.execute(
                    sa.update(deliveries)
                    .where(deliveries.c.id.in_(gone))
                    .values(status=SKIPPED, reply=GONE, claimed_until=None, updated_at=now())
                )
                skipped += len(gone)
                claimed = [row for row in claimed if not row.gone]
            self.conn.commit()
            if not claimed:
                continue
            rows = [
                Claimed(
                    row.id,
                    row.subscriber_id,
                    row.email,
                    row.name or "",
                    attempts=row.attempts,
                    uncertain=bool(row.uncertain),
                )
                for row in sorted(claimed, key=lambda r: r.id)
            ]
            return Batch(rows, skipped)

    def _take_pending(self, size: int) -> list[sa.Row[Any]]:
        """The next pending rows after the last one this sender claimed, then (when those run short) from the start.

        Starting after the last claim matters on PostgreSQL: every claimed row leaves a dead index
        entry under "pending" until VACUUM, and a scan from the start would step over all of
        them, each claim slower than the one before. Rows behind the cursor (given back by
        another sender, or by a retry) are found by the scan from the start.
        """
        claimed = self._take("pending", size, after=self._cursor)
        if len(claimed) < size and self._cursor:
            self._cursor = 0
            claimed += self._take("pending", size - len(claimed), after=0)
        if claimed:
            self._cursor = max(self._cursor, max(row.id for row in claimed))
        return claimed

    def _take(self, which: str, size: int, **values: Any) -> list[sa.Row[Any]]:
        """Claim up to `size` "pending" rows (with `after`) or "abandoned" ones, returned as _claim_statement says."""
        statement = self._claims.get(which)
        if statement is None:
            claimable = (
                sa.and_(deliveries.c.status == PENDING, deliveries.c.id > sa.bindparam("after", type_=sa.Integer))
                if which == "pending"
                else self._abandoned()
            )
            statement = self._claims[which] = DriverStatement.compile(
                self._claim_statement(claimable), self.engine.dialect
            )
        if not self.postgres:
            stamp = now()
            values.update(now=stamp, lease_end=stamp + self.lease)
        return list(statement.run(self.conn, size=size, **values).all())

    def _claim_statement(self, claimable: Any) -> sa.Update:
        """One UPDATE ... RETURNING id, subscriber_id, email, attempts, uncertain, name, gone.

        Compiled once per sender and run through the driver (DriverStatement): a send makes a few
        hundred claims a second.
        """
        stamp: sa.ColumnElement[Any]
        lease_end: sa.ColumnElement[Any]
        if self.postgres:
            stamp, lease_end = sa.func.statement_timestamp(), self._lease_end()
        else:
            stamp = sa.bindparam("now", type_=sa.DateTime(timezone=True))
            lease_end = sa.bindparam("lease_end", type_=sa.DateTime(timezone=True))
        ids = (
            sa.select(deliveries.c.id)
            .where(self._where(claimable))
            .order_by(deliveries.c.id)
            .limit(sa.bindparam("size", type_=sa.Integer))
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        name = sa.select(subscribers.c.name).where(subscribers.c.id == deliveries.c.subscriber_id).scalar_subquery()
        return (
            sa.update(deliveries)
            .where(deliveries.c.id.in_(ids))
            .values(
                status=SENDING,
                claimed_by=self.claimant,
                claimed_until=lease_end,
                uncertain=sa.or_(deliveries.c.uncertain, deliveries.c.status == SENDING),
                updated_at=stamp,
            )
            .returning(
                deliveries.c.id,
                deliveries.c.subscriber_id,
                deliveries.c.email,
                deliveries.c.attempts,
                deliveries.c.uncertain,
                _Qualified(name).label("name"),
                _Qualified(_suppressed_or_gone(self.list_id)).label("gone"),
            )
        )

    @_serialised
    def renew(self) -> int:
        """The heartbeat: extend the lease on every row this sender still holds."""
        count = self.conn.execute(
            sa.update(deliveries)
            .where(self._where(deliveries.c.status == SENDING, deliveries.c.claimed_by == self.claimant))
            .values(claimed_until=self._lease_end())
        ).rowcount
        self.conn.commit()
        return int(count)

    @_serialised
    def claimed_elsewhere(self) -> int:
        """Rows other live senders hold (PostgreSQL): this one waits for them, or for their lease to lapse."""
        count = self.conn.execute(
            sa.select(sa.func.count()).where(
                self._where(deliveries.c.status == SENDING, deliveries.c.claimed_by != self.claimant)
            )
        ).scalar_one()
        self.conn.commit()
        return int(count)

    @_serialised
    def record(self, outcomes: list[Outcome]) -> None:
        if not outcomes:
            return
        stamp = now()

        def values(o: Outcome) -> dict[str, Any]:
            return {"row_id": o.delivery_id, "reply_": o.reply, "attempts_": o.attempts, "stamp": stamp}

        sent = [{**values(o), "mid": o.message_id} for o in outcomes if o.sent]
        held = [values(o) for o in outcomes if o.uncertain and not o.sent]
        failed = [{**values(o), "perm": o.permanent} for o in outcomes if not o.sent and not o.uncertain]
        self._outcome_statement(SENT).run_many(self.conn, sent)
        self._outcome_statement(UNCERTAIN).run_many(self.conn, held)
        self._outcome_statement(FAILED).run_many(self.conn, failed)
        if failed:
            record_refusals(self.conn, [(o.delivery_id, o.reply) for o in outcomes if o.permanent and not o.sent])
        self.conn.commit()

    def _outcome_statement(self, status: str) -> DriverStatement:
        """The executemany UPDATE that records outcomes of one kind, compiled once per sender (see _claim_statement)."""
        statement = self._outcomes.get(status)
        if statement is None:
            values: dict[str, Any] = {
                "status": status,
                "reply": sa.bindparam("reply_"),
                "attempts": sa.bindparam("attempts_"),
                "updated_at": sa.bindparam("stamp"),
                "claimed_until": None,
            }
            if status == SENT:
                values.update(message_id=sa.bindparam("mid"), sent_at=sa.bindparam("stamp"))
            elif status == FAILED:
                values.update(permanent=sa.bindparam("perm"))
            update = sa.update(deliveries).where(deliveries.c.id == sa.bindparam("row_id")).values(**values)
            statement = self._outcomes[status] = DriverStatement.compile(update, self.engine.dialect)
        return statement

    @_serialised
    def release(self, delivery_ids: list[int]) -> None:
        """Give claimed rows that were never attempted back (an interrupted send)."""
        if delivery_ids:
            self.conn.execute(
                sa.update(deliveries)
                .where(deliveries.c.id.in_(delivery_ids))
                .values(status=PENDING, claimed_by="", claimed_until=None)
            )
            self.conn.commit()

    @_serialised
    def counts(self) -> dict[str, int]:
        """Rows by status for this issue and list, and "permanent" failures: what the exit code is decided on."""
        rows = self.conn.execute(
            sa.select(deliveries.c.status, sa.func.count()).where(self._where()).group_by(deliveries.c.status)
        ).all()
        permanent = self.conn.execute(
            sa.select(sa.func.count()).where(self._where(deliveries.c.status == FAILED, deliveries.c.permanent))
        ).scalar_one()
        self.conn.commit()
        return {**{status: int(count) for status, count in rows}, "permanent": int(permanent)}

    def close(self) -> None:
        with self._guard:
            try:
                if not self.postgres:
                    self.conn.exec_driver_sql("PRAGMA synchronous = NORMAL")  # back to the pool's default
                self.conn.close()
            except sa.exc.SQLAlchemyError:
                self.conn.invalidate()
            finally:
                if self._lock is not None:
                    self._lock.release()
