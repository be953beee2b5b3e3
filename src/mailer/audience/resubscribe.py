"""Lifting a suppression by hand (`mailer resubscribe`), logged as a delivery event, optionally back onto a list."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from mailer.audience.addresses import InvalidAddress, email_key, normalise_email
from mailer.audience.clean_text import clean_text
from mailer.audience.database import SUBSCRIBED, delivery_events, lists, memberships, now, subscribers, suppressions
from mailer.audience.lists import list_id_in, text_problem
from mailer.audience.subscriber_admin import utc_minute
from mailer.errors import MailerError

DEFAULT_REASON = "lifted by hand"
COMPLAINT = "complaint"


@dataclass(frozen=True)
class Resubscription:
    """What `resubscribe` did: the suppression it lifted (None: there was none) and the list it subscribed to."""

    email: str
    lifted: str | None
    list_name: str | None
    was_subscribed: bool
    still_unsubscribed: list[str]
    subscribed_to: list[str]
    """The lists that mail the address from now on (a bounce or complaint suppression ends no membership)."""

    def line(self) -> str:
        done = f"suppression lifted (was {self.lifted})" if self.lifted else "not suppressed"
        if self.list_name:
            on = "already subscribed to" if self.was_subscribed else "subscribed again to"
            done += f"; {on} '{self.list_name}'"
        mailed = [name for name in self.subscribed_to if name != self.list_name]
        if mailed:
            done += "; mailed again through " + ", ".join(f"'{name}'" for name in mailed)
        if self.still_unsubscribed:
            names = ", ".join(f"'{name}'" for name in self.still_unsubscribed)
            done += f"; still unsubscribed from {names} (--list NAME subscribes again)"
        elif not self.list_name and not mailed:
            done += "; on no list (mailer subscribers add LIST EMAIL)"
        return f"{self.email}: {done}"


def resubscribe(
    engine: Engine,
    address: str,
    *,
    list_name: str | None = None,
    reason: str = DEFAULT_REASON,
    force: bool = False,
    special_use_domains: Collection[str] = (),
) -> Resubscription:
    """Lift the address's suppression, logged as a `resubscribe` event, and with `list_name` subscribe it there.

    The event's diagnostic is `reason`, its status the reason of the suppression lifted. A complaint
    (the person marked a message as spam) is lifted only with `force`.
    """
    typed = address.strip()
    reason = clean_text(reason) or DEFAULT_REASON
    problem = text_problem("reason", reason)
    if problem:
        raise MailerError(f"--reason: {problem}")
    key = email_key(address)
    stamp = now()
    with engine.begin() as conn:
        lid = list_id_in(conn, list_name) if list_name else None
        person = conn.execute(
            sa.select(subscribers.c.id, subscribers.c.email).where(subscribers.c.email_key == key)
        ).first()
        suppression = conn.execute(
            sa.select(suppressions.c.reason, suppressions.c.created_at).where(suppressions.c.email_key == key)
        ).first()
        if suppression is None and lid is None:
            if person is None:
                raise MailerError(f"{typed}: not suppressed, and not a subscriber; nothing to lift")
            raise MailerError(f"{typed}: not suppressed; nothing to lift (--list NAME subscribes it to a list again)")
        if suppression is not None and suppression.reason == COMPLAINT and not force:
            raise MailerError(
                f"{typed}: suppressed since {utc_minute(suppression.created_at)} because they reported a message as spam; "
                "lift it only if they asked for mail again, with --force"
            )
        email = person.email if person is not None else typed
        sid: int | None = person.id if person is not None else None
        if sid is None and lid is not None:
            sid, email = _new_subscriber(conn, address, special_use_domains, stamp)
        if suppression is not None:
            lifted = conn.execute(
                sa.delete(suppressions).where(
                    suppressions.c.email_key == key, suppressions.c.reason == suppression.reason
                )
            ).rowcount
            if not lifted:
                raise MailerError(f"{typed}: its suppression changed meanwhile; run the command again")
            conn.execute(
                sa.insert(delivery_events).values(
                    subscriber_id=sid,
                    email=email,
                    list_id=lid,
                    kind="resubscribe",
                    status=suppression.reason,
                    diagnostic=reason,
                    source="cli",
                    created_at=stamp,
                )
            )
        was_subscribed = False
        if lid is not None and sid is not None:
            was_subscribed = _subscribe(conn, lid, sid, stamp)
        statuses: list[tuple[str, str]] = []
        if sid is not None:
            statuses = [
                (row.name, row.status)
                for row in conn.execute(
                    sa.select(lists.c.name, memberships.c.status)
                    .select_from(memberships.join(lists))
                    .where(memberships.c.subscriber_id == sid)
                    .order_by(lists.c.name)
                )
            ]
    return Resubscription(
        email,
        suppression.reason if suppression is not None else None,
        list_name,
        was_subscribed,
        [name for name, status in statuses if status != SUBSCRIBED],
        [name for name, status in statuses if status == SUBSCRIBED],
    )


def _new_subscriber(
    conn: Connection, address: str, special_use_domains: Collection[str], stamp: dt.datetime
) -> tuple[int, str]:
    """A subscriber row for an address known only to the suppression list, checked as `subscribers add` checks it."""
    try:
        email, key = normalise_email(address, special_use_domains=special_use_domains)
    except InvalidAddress as error:
        raise MailerError(f"{address.strip()}: {error}") from None
    sid = conn.execute(
        sa.insert(subscribers)
        .values(email=email, email_key=key, name="", attributes={}, created_at=stamp, updated_at=stamp)
        .returning(subscribers.c.id)
    ).scalar_one()
    return int(sid), email


def _subscribe(conn: Connection, lid: int, sid: int, stamp: dt.datetime) -> bool:
    """The membership set to subscribed, created if absent; True if it already was."""
    where = sa.and_(memberships.c.list_id == lid, memberships.c.subscriber_id == sid)
    status = conn.execute(sa.select(memberships.c.status).where(where)).scalar()
    if status == SUBSCRIBED:
        return True
    if status is None:
        conn.execute(sa.insert(memberships).values(list_id=lid, subscriber_id=sid, status=SUBSCRIBED, changed_at=stamp))
    else:
        conn.execute(sa.update(memberships).where(where).values(status=SUBSCRIBED, changed_at=stamp))
    return False
