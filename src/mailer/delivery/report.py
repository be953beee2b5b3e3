"""What became of an issue: sent, failed, uncertain, bounced (hard and soft), complaints and unsubscribes, per list.

Counted in the database (grouped queries over indexed columns), never by reading rows into Python, so a report on
a list of a million is as quick as on a list of ten. People, not events, are counted: an address that bounced
twice on one issue is one bounce. No tracking pixels: opens and clicks are not measured.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from mailer.audience.database import deliveries, delivery_events, lists
from mailer.audience.lists import list_id
from mailer.delivery.ledger import FAILED, PENDING, SENDING, SENT, SKIPPED, UNCERTAIN

EVENT_FIGURES = {
    "hard": "bounced_hard",
    "soft": "bounced_soft",
    "complaint": "complaints",
    "unsubscribe": "unsubscribes",
}


@dataclass
class BounceReason:
    status: str
    count: int
    example: str


@dataclass
class IssueReport:
    issue: str
    list_name: str | None
    sent: int = 0
    failed: int = 0
    uncertain: int = 0
    pending: int = 0
    skipped: int = 0
    bounced_hard: int = 0
    bounced_soft: int = 0
    complaints: int = 0
    unsubscribes: int = 0
    bounced: int = 0
    """People who bounced at all: one who bounced soft, then hard, is one (and counts under both kinds)."""
    reasons: list[BounceReason] = field(default_factory=list)
    last_sent: str | None = None

    @property
    def attempted(self) -> int:
        """Messages the relay took or refused: what bounce and complaint rates are a share of."""
        return self.sent + self.failed + self.uncertain

    def rate(self, figure: int) -> float:
        """A figure as a share of the messages attempted (a refusal at RCPT is a bounce that was never sent)."""
        return figure / self.attempted if self.attempted else 0.0

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> list[str]:
        """The report as aligned lines for a terminal."""
        where = f" to '{self.list_name}'" if self.list_name else ""
        rows = [
            ("sent", self.sent, ""),
            ("failed", self.failed, ""),
            ("uncertain", self.uncertain, ""),
            ("pending", self.pending, ""),
            ("bounced", self.bounced, f"{self.rate(self.bounced):.1%}"),
            ("  hard", self.bounced_hard, f"{self.rate(self.bounced_hard):.1%}"),
            ("  soft", self.bounced_soft, f"{self.rate(self.bounced_soft):.1%}"),
            ("complaints", self.complaints, f"{self.rate(self.complaints):.2%}"),
            ("unsubscribes", self.unsubscribes, f"{self.rate(self.unsubscribes):.1%}"),
        ]
        width = max(len(f"{count:,}") for _, count, _ in rows)
        lines = [f"{self.issue}{where}"]
        lines += [f"  {label:<15} {count:>{width},}  {share}".rstrip() for label, count, share in rows]
        if self.reasons:
            lines.append("  bounce reasons:")
            lines += [
                f"    {reason.status or 'no status'}: {reason.count:,}"
                + (f"  {reason.example}" if reason.example else "")
                for reason in self.reasons
            ]
        return lines


def _fill(conn: Connection, report: IssueReport, lid: int | None) -> IssueReport:
    row_filter = [deliveries.c.issue == report.issue] + ([deliveries.c.list_id == lid] if lid is not None else [])
    for status, count in conn.execute(
        sa.select(deliveries.c.status, sa.func.count()).where(*row_filter).group_by(deliveries.c.status)
    ):
        if status == SENT:
            report.sent = count
        elif status == FAILED:
            report.failed = count
        elif status == UNCERTAIN:
            report.uncertain = count
        elif status in (PENDING, SENDING):
            report.pending += count
        elif status == SKIPPED:
            report.skipped = count
    last = conn.execute(sa.select(sa.func.max(deliveries.c.sent_at)).where(*row_filter)).scalar()
    if last is not None and last.tzinfo is None:  # SQLite keeps the UTC time without its zone
        last = last.replace(tzinfo=dt.UTC)
    report.last_sent = last.isoformat() if last is not None else None
    return _fill_events(conn, report, lid)


def _fill_events(conn: Connection, report: IssueReport, lid: int | None) -> IssueReport:
    """Bounces, complaints and unsubscribes: people, not events, and the bounce reasons."""
    event_filter = [delivery_events.c.issue == report.issue] + (
        [delivery_events.c.list_id == lid] if lid is not None else [delivery_events.c.list_id.is_not(None)]
    )  # the events of a list deleted since went with its deliveries: they are no share of what is left
    people = sa.func.count(sa.distinct(delivery_events.c.email))
    for kind, count in conn.execute(
        sa.select(delivery_events.c.kind, people)
        .where(*event_filter, delivery_events.c.kind.in_(EVENT_FIGURES))
        .group_by(delivery_events.c.kind)
    ):
        setattr(report, EVENT_FIGURES[kind], count)
    report.bounced = conn.execute(
        sa.select(people).where(*event_filter, delivery_events.c.kind.in_(("hard", "soft")))
    ).scalar_one()
    report.reasons = [
        BounceReason(status, count, example or "")
        for status, count, example in conn.execute(
            sa.select(delivery_events.c.status, people, sa.func.min(delivery_events.c.diagnostic))
            .where(*event_filter, delivery_events.c.kind.in_(("hard", "soft", "unknown")))
            .group_by(delivery_events.c.status)
            .order_by(people.desc(), delivery_events.c.status)
        )
    ]
    return report


def issue_report(engine: Engine, issue: str, list_name: str | None = None) -> IssueReport:
    """One issue's figures, over every list it went to or one of them."""
    lid = list_id(engine, list_name) if list_name is not None else None
    with engine.connect() as conn:
        return _fill(conn, IssueReport(issue, list_name), lid)


def sent_issue_reports(engine: Engine) -> list[IssueReport]:
    """Every issue that went out, newest send first: the Reports page of the preview."""
    with engine.connect() as conn:
        issues = conn.execute(
            sa.select(deliveries.c.issue)
            .where(deliveries.c.sent_at.is_not(None))
            .group_by(deliveries.c.issue)
            .order_by(sa.func.max(deliveries.c.sent_at).desc(), deliveries.c.issue)
        ).scalars()
        return [_fill(conn, IssueReport(issue, None), None) for issue in list(issues)]


def event_counts(engine: Engine, issue: str, list_name: str) -> dict[str, int]:
    """People who bounced, complained or unsubscribed for one issue and list: `mailer status` shows them."""
    with engine.connect() as conn:
        lid = conn.execute(sa.select(lists.c.id).where(lists.c.name == list_name)).scalar()
        report = _fill_events(conn, IssueReport(issue, list_name), lid)
    return {
        "bounced": report.bounced,
        "hard": report.bounced_hard,
        "complaints": report.complaints,
        "unsubscribes": report.unsubscribes,
    }
