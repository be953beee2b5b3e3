"""What a list owner looks up: who is on a list (streamed, however long it is) and one address's whole story."""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from mailer.audience.addresses import email_key
from mailer.audience.database import deliveries, delivery_events, lists, memberships, subscribers, suppressions
from mailer.audience.lists import list_id_in
from mailer.errors import MailerError

LIKE_ESCAPE = "/"
EMAIL_COLUMN = 40
NAME_COLUMN = 30
"""The widest the email and name columns of `subscribers list` get; a longer value pushes its own line along."""
RECENT = 10


def utc_minute(stamp: dt.datetime | None) -> str:
    """A stored time in UTC to the minute; SQLite hands back naive UTC times, PostgreSQL aware ones."""
    if stamp is None:
        return "-"
    aware = stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)
    return aware.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _fold(text: str | None) -> str | None:
    """Text as a search compares it: composed (NFC) and lower case, as email_key is."""
    return None if text is None else unicodedata.normalize("NFC", text).lower()


@dataclass(frozen=True)
class ListedSubscriber:
    email: str
    name: str
    status: str
    suppression: str | None


@dataclass
class SubscriberListing:
    """The people on a list, as `rows`: an iterator that reads them from the database a batch at a time."""

    list_name: str
    count: int
    email_width: int
    name_width: int
    rows: Generator[ListedSubscriber, None, None]
    search: str = ""
    suppressed_only: bool = False

    def lines(self) -> Generator[str, None, None]:
        """A header and one aligned line per subscriber, or one line saying there is nobody to show."""
        if not self.count:
            who = "suppressed subscribers" if self.suppressed_only else "subscribers"
            yield f"no {who} on '{self.list_name}'" + (f" match {self.search!r}" if self.search else "")
            return
        email, name = self.email_width, self.name_width
        yield f"{'EMAIL':<{email}}  {'NAME':<{name}}  {'STATUS':<12}  SUPPRESSED"
        try:
            for row in self.rows:
                yield f"{row.email:<{email}}  {row.name:<{name}}  {row.status:<12}  {row.suppression or ''}".rstrip()
        finally:
            self.rows.close()  # a reader that stops early gives the connection back now, not when collected


def _folded_name(conn: Connection) -> sa.ColumnElement[Any]:
    """subscribers.name folded like the search text: PostgreSQL's lower(); on SQLite (whose lower() knows only
    ASCII) Python's, registered on this connection."""
    if conn.dialect.name != "sqlite":
        return sa.func.lower(subscribers.c.name)
    conn.connection.driver_connection.create_function("mailer_fold", 1, _fold, deterministic=True)  # type: ignore[union-attr]
    return sa.func.mailer_fold(subscribers.c.name)


def _like_pattern(text: str) -> str:
    """`%text%` with LIKE's own wildcards in `text` matching themselves."""
    folded = _fold(text) or ""
    for char in (LIKE_ESCAPE, "%", "_"):
        folded = folded.replace(char, LIKE_ESCAPE + char)
    return f"%{folded}%"


def _listing_filters(
    conn: Connection, list_id: int, search: str, suppressed_only: bool
) -> list[sa.ColumnElement[bool]]:
    filters: list[sa.ColumnElement[bool]] = [memberships.c.list_id == list_id]
    if search:
        pattern = _like_pattern(search)
        filters.append(
            sa.or_(
                subscribers.c.email_key.like(pattern, escape=LIKE_ESCAPE),
                _folded_name(conn).like(pattern, escape=LIKE_ESCAPE),
            )
        )
    if suppressed_only:
        filters.append(suppressions.c.email_key.is_not(None))
    return filters


_MEMBERS = memberships.join(subscribers, subscribers.c.id == memberships.c.subscriber_id).outerjoin(
    suppressions, suppressions.c.email_key == subscribers.c.email_key
)


def subscriber_listing(
    engine: Engine, list_name: str, *, search: str = "", suppressed_only: bool = False, batch: int = 1000
) -> SubscriberListing:
    """Everyone on the list (subscribed or not), by address; `search` matches address or name, any case.

    The list name is checked and the columns measured at once (one aggregate query); the rows
    themselves stream: a server-side cursor on PostgreSQL, SQLite's own stepping, `batch` rows at a time.
    """
    with engine.connect() as conn:
        lid = list_id_in(conn, list_name)
        measured = conn.execute(
            sa.select(
                sa.func.count(),
                sa.func.max(sa.func.length(subscribers.c.email)),
                sa.func.max(sa.func.length(subscribers.c.name)),
            )
            .select_from(_MEMBERS)
            .where(*_listing_filters(conn, lid, search, suppressed_only))
        ).one()
    count, email_width, name_width = measured[0], measured[1] or 0, measured[2] or 0
    return SubscriberListing(
        list_name,
        int(count),
        min(max(5, int(email_width)), EMAIL_COLUMN),
        min(max(4, int(name_width)), NAME_COLUMN),
        _listed(engine, lid, search, suppressed_only, batch),
        search,
        suppressed_only,
    )


def _listed(
    engine: Engine, lid: int, search: str, suppressed_only: bool, batch: int
) -> Generator[ListedSubscriber, None, None]:
    with engine.connect() as conn:
        query = (
            sa.select(subscribers.c.email, subscribers.c.name, memberships.c.status, suppressions.c.reason)
            .select_from(_MEMBERS)
            .where(*_listing_filters(conn, lid, search, suppressed_only))
            .order_by(subscribers.c.email_key)
            .execution_options(yield_per=batch)
        )
        for row in conn.execute(query):
            yield ListedSubscriber(row.email, row.name, row.status, row.reason)


@dataclass(frozen=True)
class MembershipLine:
    list_name: str
    status: str
    since: dt.datetime


@dataclass(frozen=True)
class SuppressionLine:
    reason: str
    note: str
    since: dt.datetime


@dataclass(frozen=True)
class DeliveryLine:
    issue: str
    list_name: str
    status: str
    when: dt.datetime | None
    reply: str


@dataclass(frozen=True)
class EventLine:
    kind: str
    issue: str | None
    status: str
    diagnostic: str
    when: dt.datetime


@dataclass(frozen=True)
class SubscriberDetails:
    """One address: the subscriber (None if only a suppression or events know it), lists, suppression, history."""

    email: str
    name: str | None
    attributes: dict[str, Any]
    created_at: dt.datetime | None
    updated_at: dt.datetime | None
    memberships: list[MembershipLine]
    suppression: SuppressionLine | None
    deliveries: list[DeliveryLine]
    delivery_count: int
    events: list[EventLine]
    event_count: int

    def lines(self) -> list[str]:
        out = [self.email]
        if self.name is None:
            out.append("  not a subscriber (on no list)")
        else:
            out.append(f"  name:        {self.name or '-'}")
            attributes = ", ".join(f"{key}={value}" for key, value in sorted(self.attributes.items()))
            out.append(f"  attributes:  {attributes or '-'}")
            out.append(f"  created:     {utc_minute(self.created_at)}")
            out.append(f"  updated:     {utc_minute(self.updated_at)}")
        if self.suppression:
            s = self.suppression
            note = f" ({s.note})" if s.note else ""
            out.append(f"  suppressed:  {s.reason} since {utc_minute(s.since)}{note}")
        else:
            out.append("  suppressed:  no")
        out.append("lists:" if self.memberships else "lists: none")
        width = max((len(m.list_name) for m in self.memberships), default=0)
        out += [f"  {m.list_name:<{width}}  {m.status} since {utc_minute(m.since)}" for m in self.memberships]
        out.append(_recent_heading("deliveries", len(self.deliveries), self.delivery_count))
        out += _columns(
            [[d.issue, d.list_name, d.status, utc_minute(d.when), d.reply] for d in self.deliveries],
        )
        out.append(_recent_heading("events", len(self.events), self.event_count))
        out += _columns(
            [[e.kind, e.issue or "-", e.status or "-", utc_minute(e.when), e.diagnostic] for e in self.events]
        )
        return out


def _recent_heading(what: str, shown: int, total: int) -> str:
    if not total:
        return f"{what}: none"
    return f"{what} (latest {shown} of {total}):" if total > shown else f"{what}:"


def _columns(rows: list[list[str]]) -> list[str]:
    """Rows of cells aligned on every column but the last (a server's reply, a diagnostic), which runs on."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return [
        (
            "  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1]
        ).rstrip()
        for row in rows
    ]


def subscriber_details(engine: Engine, address: str) -> SubscriberDetails:
    """Everything stored about one address, for `mailer subscribers show`."""
    key = email_key(address)
    with engine.connect() as conn:
        person = conn.execute(sa.select(subscribers).where(subscribers.c.email_key == key)).mappings().first()
        suppression = conn.execute(sa.select(suppressions).where(suppressions.c.email_key == key)).mappings().first()
        typed = address.strip()
        if person is not None:
            sid = person["id"]
            event_filter = sa.or_(
                delivery_events.c.subscriber_id == sid,
                sa.and_(
                    delivery_events.c.subscriber_id.is_(None),
                    delivery_events.c.email.in_({person["email"], typed}),
                ),
            )
        else:
            sid = None
            event_filter = delivery_events.c.email.in_({typed, key})
        event_count = int(conn.execute(sa.select(sa.func.count()).where(event_filter)).scalar_one())
        if person is None and suppression is None and not event_count:
            raise MailerError(f"{typed}: no such subscriber, and not suppressed")
        events = [
            EventLine(row.kind, row.issue, row.status, row.diagnostic, row.created_at)
            for row in conn.execute(
                sa.select(delivery_events)
                .where(event_filter)
                .order_by(delivery_events.c.created_at.desc(), delivery_events.c.id.desc())
                .limit(RECENT)
            )
        ]
        member_of: list[MembershipLine] = []
        sent: list[DeliveryLine] = []
        delivery_count = 0
        if sid is not None:
            member_of = [
                MembershipLine(row.name, row.status, row.changed_at)
                for row in conn.execute(
                    sa.select(lists.c.name, memberships.c.status, memberships.c.changed_at)
                    .select_from(memberships.join(lists))
                    .where(memberships.c.subscriber_id == sid)
                    .order_by(lists.c.name)
                )
            ]
            delivery_count = int(
                conn.execute(
                    sa.select(sa.func.count()).select_from(deliveries).where(deliveries.c.subscriber_id == sid)
                ).scalar_one()
            )
            when = sa.func.coalesce(deliveries.c.sent_at, deliveries.c.updated_at)
            sent = [
                DeliveryLine(row.issue, row.name, row.status, row.sent_at or row.updated_at, row.reply)
                for row in conn.execute(
                    sa.select(
                        deliveries.c.issue,
                        lists.c.name,
                        deliveries.c.status,
                        deliveries.c.sent_at,
                        deliveries.c.updated_at,
                        deliveries.c.reply,
                    )
                    .select_from(deliveries.join(lists))
                    .where(deliveries.c.subscriber_id == sid)
                    .order_by(when.desc(), deliveries.c.id.desc())
                    .limit(RECENT)
                )
            ]
    return SubscriberDetails(
        email=person["email"] if person is not None else typed,
        name=person["name"] if person is not None else None,
        attributes=dict(person["attributes"]) if person is not None else {},
        created_at=person["created_at"] if person is not None else None,
        updated_at=person["updated_at"] if person is not None else None,
        memberships=member_of,
        suppression=SuppressionLine(suppression["reason"], suppression["note"], suppression["created_at"])
        if suppression is not None
        else None,
        deliveries=sent,
        delivery_count=delivery_count,
        events=events,
        event_count=event_count,
    )
