"""What `mailer status` shows: the ledger's rows for an issue, counted, with every failure and uncertain row,
and how many were skipped because another list covers them."""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mailer.audience.database import deliveries, lists
from mailer.audience.lists import list_id
from mailer.delivery.ledger import FAILED, PENDING, SENDING, SENT, SKIPPED, UNCERTAIN
from mailer.delivery.report import event_counts
from mailer.wording import plural


@dataclass
class StatusReport:
    issue: str
    list_name: str
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[str, str, bool]] = field(default_factory=list)
    held: list[tuple[str, str]] = field(default_factory=list)
    uncertain: list[str] = field(default_factory=list)
    covered: dict[str | None, int] = field(default_factory=dict)
    """Skipped rows whose recipient has (or is getting) the issue through another list, by that list (None: deleted)."""
    came_back: dict[str, int] = field(default_factory=dict)
    """People who bounced, complained or unsubscribed since (report.event_counts)."""

    def lines(self) -> list[str]:
        c = self.counts
        held = f"{c[UNCERTAIN]} uncertain, " if c.get(UNCERTAIN) else ""
        head = (
            f"{self.issue} to '{self.list_name}': {c.get(SENT, 0)} sent, {c.get(PENDING, 0) + c.get(SENDING, 0)} pending, "
            f"{c.get(FAILED, 0)} failed, {held}{c.get(SKIPPED, 0)} skipped"
        )
        back = self.came_back
        if any(back.values()):
            head += (
                f"; since: {back['bounced']} bounced ({back['hard']} hard), {plural(back['complaints'], 'complaint')}, "
                f"{plural(back['unsubscribes'], 'unsubscribe')}"
            )
        rows = [
            f"  {count} skipped: they get it through " + (f"'{name}'" if name else "another list")
            for name, count in self.covered.items()
        ]
        rows += [
            f"  failed ({'permanent' if permanent else 'temporary'}): {email}: {reply}"
            for email, reply, permanent in self.failures
        ]
        rows += [
            f"  uncertain (not resent): {email}: {reply}; --retry-uncertain sends it again"
            for email, reply in self.held
        ]
        rows += [f"  uncertain: {email} (resent; may have been delivered twice)" for email in self.uncertain]
        return [head, *rows]


def delivery_status(engine: Engine, issue: str, list_name: str) -> StatusReport:
    lid = list_id(engine, list_name)
    report = StatusReport(issue, list_name)
    where = sa.and_(deliveries.c.issue == issue, deliveries.c.list_id == lid)
    with engine.connect() as conn:
        for status, count in conn.execute(
            sa.select(deliveries.c.status, sa.func.count()).where(where).group_by(deliveries.c.status)
        ):
            report.counts[status] = count
        report.covered = {
            name: count
            for name, count in conn.execute(
                sa.select(lists.c.name, sa.func.count())
                .select_from(deliveries.outerjoin(lists, lists.c.id == deliveries.c.covered_by))
                .where(where, deliveries.c.status == SKIPPED, deliveries.c.covered_by.is_not(None))
                .group_by(lists.c.name)
                .order_by(sa.func.count().desc(), lists.c.name)
            )
        }
        report.failures = [
            (row.email, row.reply, bool(row.permanent))
            for row in conn.execute(
                sa.select(deliveries.c.email, deliveries.c.reply, deliveries.c.permanent)
                .where(where, deliveries.c.status == FAILED)
                .order_by(deliveries.c.email)
            )
        ]
        report.held = [
            (row.email, row.reply)
            for row in conn.execute(
                sa.select(deliveries.c.email, deliveries.c.reply)
                .where(where, deliveries.c.status == UNCERTAIN)
                .order_by(deliveries.c.email)
            )
        ]
        report.uncertain = list(
            conn.execute(
                sa.select(deliveries.c.email)
                .where(where, deliveries.c.uncertain == sa.true(), deliveries.c.status == SENT)
                .order_by(deliveries.c.email)
            ).scalars()
        )
    report.came_back = event_counts(engine, issue, list_name)
    return report


def issues_sent_to(engine: Engine, issue: str) -> list[str]:
    """The lists an issue has ledger rows for, for `mailer status` without --list."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(lists.c.name)
                .where(sa.exists().where(deliveries.c.list_id == lists.c.id, deliveries.c.issue == issue))
                .order_by(lists.c.name)
            ).scalars()
        )
