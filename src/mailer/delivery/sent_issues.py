"""Which issues went out, as the ledger knows it: what makes an issue public, and what a list already had."""

from __future__ import annotations

from collections.abc import Collection

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mailer.audience.database import deliveries
from mailer.audience.lists import list_id
from mailer.delivery.ledger import SENDING, SENT, UNCERTAIN

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
