"""Which issues went out, as the ledger knows it: what makes an issue public, and what a list already had."""

from __future__ import annotations

from collections.abc import Collection

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mailer.audience.database import SUBSCRIBED, deliveries, memberships, subscribers, suppressions
from mailer.audience.lists import list_id, list_id_in
from mailer.delivery.ledger import PENDING, SENDING, SENT, SKIPPED, UNCERTAIN

MAY_HAVE_ARRIVED = (SENT, SENDING, UNCERTAIN)
"""A row in one of these states may be in someone's inbox, linking to the issue's web version."""


def went_out(engine: Engine, slugs: Collection[str]) -> set[str]:
    """The issues among `slugs` that some list may have received: public from then on, whatever their date."""
    if not slugs:
        return set()
    with engine.connect() as conn:
        return set(
            conn.execute(
                sa.select(deliveries.c.issue)
                .where(deliveries.c.issue.in_(list(slugs)), deliveries.c.status.in_(MAY_HAVE_ARRIVED))
                .distinct()
            ).scalars()
        )


def sent_to_list(engine: Engine, list_name: str) -> set[str]:
    """Every issue the list has ledger rows for: sent, being sent, or begun and left unfinished."""
    lid = list_id(engine, list_name)
    with engine.connect() as conn:
        return set(conn.execute(sa.select(deliveries.c.issue).where(deliveries.c.list_id == lid).distinct()).scalars())


def unfinished_for_list(engine: Engine, list_name: str) -> set[str]:
    """The issues whose send to the list has rows left to send: interrupted, or stopped by the relay."""
    lid = list_id(engine, list_name)
    with engine.connect() as conn:
        query = (
            sa.select(deliveries.c.issue)
            .where(deliveries.c.list_id == lid, deliveries.c.status.in_((PENDING, SENDING)))
            .distinct()
        )
        return set(conn.execute(query).scalars())


def recipients_left(engine: Engine, issue: str, list_names: Collection[str], *, allow_duplicates: bool = False) -> int:
    """How many messages a send of the issue to these lists would make now, as the send counts them.

    Each person once, minus who already had it (a ledger row for the issue that is not skipped)
    through any list; with `allow_duplicates`, once per list they are on, minus who had it through that list.
    """
    with engine.connect() as conn:
        ids = [list_id_in(conn, name) for name in list_names]
        had_it = sa.exists().where(
            deliveries.c.issue == issue,
            deliveries.c.subscriber_id == memberships.c.subscriber_id,
            deliveries.c.status != SKIPPED,
            deliveries.c.list_id == memberships.c.list_id if allow_duplicates else sa.true(),
        )
        counted = sa.func.count() if allow_duplicates else sa.func.count(sa.distinct(memberships.c.subscriber_id))
        query = (
            sa.select(counted)
            .select_from(memberships.join(subscribers))
            .where(
                memberships.c.list_id.in_(ids),
                memberships.c.status == SUBSCRIBED,
                ~sa.exists().where(suppressions.c.email_key == subscribers.c.email_key),
                ~had_it,
            )
        )
        return int(conn.execute(query).scalar_one())
