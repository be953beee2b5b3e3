"""Lists, their subscribers and the suppression list that every send honours."""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from mailer.audience.addresses import InvalidAddress, email_key, normalise_email
from mailer.audience.clean_text import clean_text
from mailer.audience.database import (
    SUBSCRIBED,
    SUPPRESSION_REASONS,
    UNSUBSCRIBED,
    lists,
    memberships,
    now,
    subscribers,
    suppressions,
)
from mailer.errors import MailerError

LIST_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
MAX_TEXT = 300
"""The longest name, attribute name or attribute value: subscribers.name is VARCHAR(300) on PostgreSQL."""
_SURROGATE = re.compile("[\ud800-\udfff]")


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


def text_problem(what: str, text: str) -> str | None:
    """Why cleaned `text` cannot be stored as a subscriber's `what`, the same on SQLite and PostgreSQL; None if it can.

    Control characters are gone by now (clean_text); a lone surrogate (an argument that was not
    UTF-8) cannot be cleaned into anything meant, so it is refused.
    """
    if len(text) > MAX_TEXT:
        return f"{what} is longer than {MAX_TEXT} characters ({len(text)})"
    if not text.isascii() and (surrogate := _SURROGATE.search(text)):
        return f"{what} contains U+{ord(surrogate.group()):04X}, not a character; remove it"
    return None


def clean_subscriber(name: str, attributes: dict[str, str]) -> tuple[str, dict[str, str]]:
    """The name, attribute names and attribute values as stored: each through clean_text."""
    return clean_text(name), {clean_text(key): clean_text(value) for key, value in attributes.items()}


def subscriber_problem(name: str, attributes: dict[str, str]) -> str | None:
    """The first reason the cleaned name or an attribute cannot be stored; None if all can."""
    checks = [("name", name)]
    for key, value in attributes.items():
        if not key:
            return "an attribute name is empty"
        checks += [("attribute name", key), (f"attribute {_shown(key)}", value)]
    return next(filter(None, (text_problem(what, text) for what, text in checks)), None)


@dataclass(frozen=True)
class ListSummary:
    """One line of `mailer lists`: who would be mailed, who left, who is suppressed."""

    name: str
    description: str
    subscribed: int
    unsubscribed: int
    suppressed: int
    public: bool = False


@dataclass(frozen=True)
class Subscriber:
    id: int
    email: str
    name: str
    attributes: dict[str, Any]


def list_id_in(conn: Connection, name: str) -> int:
    """The id of a list by name, inside an open transaction; unknown names get a hint."""
    found = conn.execute(sa.select(lists.c.id).where(lists.c.name == name)).scalar()
    if found is not None:
        return int(found)
    known = list(conn.execute(sa.select(lists.c.name).order_by(lists.c.name)).scalars())
    hint = difflib.get_close_matches(name, known, n=1)
    if hint:
        raise MailerError(f"unknown list '{name}'; did you mean '{hint[0]}'?")
    if known:
        raise MailerError(f"unknown list '{name}'; known lists: {', '.join(known)}")
    raise MailerError(f"unknown list '{name}'; there are no lists yet: mailer lists create {name}")


def list_id(engine: Engine, name: str) -> int:
    with engine.connect() as conn:
        return list_id_in(conn, name)


def check_list_name(name: str) -> None:
    """The rule for a list's name, the same for a new list and a renamed one."""
    if not LIST_NAME.match(name):
        raise MailerError(f"list name '{name}': use lower-case letters, digits, - and _ (e.g. staff, press-2016)")


def create_list(engine: Engine, name: str, description: str = "", *, public: bool = False) -> None:
    """A new list; its description is one line of plain text, cleaned like a name (it titles the subscribe page)."""
    check_list_name(name)
    description = clean_text(description)
    problem = text_problem("description", description)
    if problem:
        raise MailerError(f"list '{name}': {problem}")
    with engine.begin() as conn:
        if conn.execute(sa.select(lists.c.id).where(lists.c.name == name)).first():
            raise MailerError(f"list '{name}' already exists")
        conn.execute(sa.insert(lists).values(name=name, description=description, public=public, created_at=now()))


def set_public(engine: Engine, name: str, public: bool) -> None:
    """Whether anyone may subscribe to the list themselves on the public web (mailer serve)."""
    with engine.begin() as conn:
        conn.execute(sa.update(lists).where(lists.c.id == list_id_in(conn, name)).values(public=public))


@dataclass(frozen=True)
class PublicList:
    id: int
    name: str
    description: str


def public_list(engine: Engine, name: str) -> PublicList | None:
    """The list of that name if people may subscribe to it on the web; None for private or unknown lists alike."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(lists.c.id, lists.c.name, lists.c.description).where(lists.c.name == name, lists.c.public)
        ).first()
    return PublicList(row.id, row.name, row.description) if row else None


def _suppressed() -> sa.Exists:
    """True where the subscriber's address is on the suppression list."""
    return sa.exists().where(suppressions.c.email_key == subscribers.c.email_key)


def list_summaries(engine: Engine) -> list[ListSummary]:
    """Every list with its counts; `subscribed` counts only who would be mailed."""
    status = memberships.c.status
    suppressed = _suppressed()
    query = (
        sa.select(
            lists.c.name,
            lists.c.description,
            sa.func.count().filter(sa.and_(status == SUBSCRIBED, ~suppressed)),
            sa.func.count().filter(status == UNSUBSCRIBED),
            sa.func.count().filter(sa.and_(status == SUBSCRIBED, suppressed)),
            lists.c.public,
        )
        .select_from(lists.outerjoin(memberships).outerjoin(subscribers))
        .group_by(lists.c.id, lists.c.name, lists.c.description, lists.c.public)
        .order_by(lists.c.name)
    )
    with engine.connect() as conn:
        return [ListSummary(*row) for row in conn.execute(query)]


def suppression_reason(conn: Connection, email_key: str) -> str | None:
    reason = conn.execute(sa.select(suppressions.c.reason).where(suppressions.c.email_key == email_key)).scalar()
    return str(reason) if reason is not None else None


def add_subscriber(
    engine: Engine,
    list_name: str,
    address: str,
    *,
    name: str = "",
    attributes: dict[str, str] | None = None,
    special_use_domains: Collection[str] = (),
) -> str:
    """Subscribe one address; returns what happened: 'added', 'updated' or 'unchanged'."""
    try:
        email, key = normalise_email(address, special_use_domains=special_use_domains)
    except InvalidAddress as error:
        raise MailerError(f"{address}: {error}") from None
    name, attributes = clean_subscriber(name, attributes or {})
    problem = subscriber_problem(name, attributes)
    if problem:
        raise MailerError(f"{email}: {problem}")
    with engine.begin() as conn:
        lid = list_id_in(conn, list_name)
        reason = suppression_reason(conn, key)
        if reason:
            raise MailerError(f"{email} is suppressed ({reason}) and is never mailed; it was not subscribed")
        row = conn.execute(sa.select(subscribers).where(subscribers.c.email_key == key)).mappings().first()
        stamp = now()
        changed = False
        if row is None:
            sid = conn.execute(
                sa.insert(subscribers)
                .values(
                    email=email,
                    email_key=key,
                    name=name,
                    attributes=attributes,
                    created_at=stamp,
                    updated_at=stamp,
                )
                .returning(subscribers.c.id)
            ).scalar_one()
        else:
            sid = row["id"]
            merged = {**row["attributes"], **attributes}
            new_name = name or row["name"]
            if merged != row["attributes"] or new_name != row["name"]:
                conn.execute(
                    sa.update(subscribers)
                    .where(subscribers.c.id == sid)
                    .values(name=new_name, attributes=merged, updated_at=stamp)
                )
                changed = True
        status = conn.execute(
            sa.select(memberships.c.status).where(memberships.c.list_id == lid, memberships.c.subscriber_id == sid)
        ).scalar()
        if status is None:
            conn.execute(
                sa.insert(memberships).values(list_id=lid, subscriber_id=sid, status=SUBSCRIBED, changed_at=stamp)
            )
            return "added"
        if status != SUBSCRIBED:
            conn.execute(
                sa.update(memberships)
                .where(memberships.c.list_id == lid, memberships.c.subscriber_id == sid)
                .values(status=SUBSCRIBED, changed_at=stamp)
            )
            return "added"
        return "updated" if changed else "unchanged"


def remove_subscriber(engine: Engine, list_name: str, address: str) -> None:
    """Take an address off one list (an administrator's change, not an unsubscription)."""
    key = email_key(address)
    with engine.begin() as conn:
        lid = list_id_in(conn, list_name)
        sid = conn.execute(sa.select(subscribers.c.id).where(subscribers.c.email_key == key)).scalar()
        deleted = 0
        if sid is not None:
            deleted = conn.execute(
                sa.delete(memberships).where(memberships.c.list_id == lid, memberships.c.subscriber_id == sid)
            ).rowcount
        if not deleted:
            raise MailerError(f"{address.strip()} is not on list '{list_name}'")


def unsubscribe(engine: Engine, address: str, *, reason: str = "unsubscribed", note: str = "") -> int:
    """Suppress an address everywhere; returns how many list memberships it ended."""
    if reason not in SUPPRESSION_REASONS:
        raise MailerError(f"reason '{reason}': use one of {', '.join(SUPPRESSION_REASONS)}")
    key = email_key(address)
    stamp = now()
    with engine.begin() as conn:
        if suppression_reason(conn, key) is None:
            conn.execute(sa.insert(suppressions).values(email_key=key, reason=reason, note=note, created_at=stamp))
        sid = conn.execute(sa.select(subscribers.c.id).where(subscribers.c.email_key == key)).scalar()
        if sid is None:
            return 0
        return int(
            conn.execute(
                sa.update(memberships)
                .where(memberships.c.subscriber_id == sid, memberships.c.status == SUBSCRIBED)
                .values(status=UNSUBSCRIBED, changed_at=stamp)
            ).rowcount
        )


@dataclass(frozen=True)
class Membership:
    subscriber_id: int
    email: str
    name: str
    list_id: int
    list_name: str
    list_description: str
    status: str | None
    changed_at: dt.datetime | None


def membership(engine: Engine, subscriber_id: int, list_id_value: int) -> Membership | None:
    """A subscriber and a list as an unsubscribe link names them; None if either no longer exists."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(
                subscribers.c.id,
                subscribers.c.email,
                subscribers.c.name,
                lists.c.id.label("list_id"),
                lists.c.name.label("list_name"),
                lists.c.description,
                memberships.c.status,
                memberships.c.changed_at,
            )
            .select_from(
                subscribers.join(lists, sa.true()).outerjoin(
                    memberships,
                    sa.and_(memberships.c.subscriber_id == subscribers.c.id, memberships.c.list_id == lists.c.id),
                )
            )
            .where(subscribers.c.id == subscriber_id, lists.c.id == list_id_value)
        ).first()
    return Membership(*row) if row else None


def find_subscriber_id(engine: Engine, address: str) -> int | None:
    with engine.connect() as conn:
        found = conn.execute(sa.select(subscribers.c.id).where(subscribers.c.email_key == email_key(address))).scalar()
    return int(found) if found is not None else None


def list_name_of(engine: Engine, list_id_value: int) -> str | None:
    with engine.connect() as conn:
        found = conn.execute(sa.select(lists.c.name).where(lists.c.id == list_id_value)).scalar()
    return str(found) if found is not None else None


def unsubscribe_from_list(engine: Engine, subscriber_id: int, list_id_value: int) -> bool:
    """End one membership now (an unsubscribe link); False if it had already ended. Later sends honour it."""
    with engine.begin() as conn:
        changed = conn.execute(
            sa.update(memberships)
            .where(
                memberships.c.subscriber_id == subscriber_id,
                memberships.c.list_id == list_id_value,
                memberships.c.status == SUBSCRIBED,
            )
            .values(status=UNSUBSCRIBED, changed_at=now())
        ).rowcount
    return bool(changed)


def mailable_subscribers(engine: Engine, list_name: str, *, batch: int = 1000) -> Iterator[Subscriber]:
    """Who a send to this list reaches: subscribed, not suppressed, streamed in batches."""
    with engine.connect() as conn:
        lid = list_id_in(conn, list_name)
        query = (
            sa.select(subscribers.c.id, subscribers.c.email, subscribers.c.name, subscribers.c.attributes)
            .select_from(subscribers.join(memberships))
            .where(memberships.c.list_id == lid, memberships.c.status == SUBSCRIBED, ~_suppressed())
            .order_by(subscribers.c.email_key)
            .execution_options(yield_per=batch)
        )
        for row in conn.execute(query):
            yield Subscriber(row.id, row.email, row.name, dict(row.attributes))
