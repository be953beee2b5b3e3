"""How often an address was sent a confirmation mail: the web form must not become a way to flood someone.

Kept in the database, so every `mailer serve` worker and every source IP counts against the
same address; rows older than a day are dropped as the address is next looked at.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mailer.audience.database import confirmation_mails

MIN_INTERVAL = dt.timedelta(minutes=10)
WINDOW = dt.timedelta(days=1)


def may_send_confirmation(engine: Engine, email_key: str, *, per_day: int, now: dt.datetime) -> bool:
    """Record a confirmation mail to this address and say yes, unless one went out in the last 10 minutes
    or `per_day` in the last day; then record nothing and say no."""
    with engine.begin() as conn:
        conn.execute(
            sa.delete(confirmation_mails).where(
                confirmation_mails.c.email_key == email_key, confirmation_mails.c.sent_at < now - WINDOW
            )
        )
        own = conn.execute(
            sa.insert(confirmation_mails).values(email_key=email_key, sent_at=now).returning(confirmation_mails.c.id)
        ).scalar_one()
        earlier = list(
            conn.execute(
                sa.select(confirmation_mails.c.sent_at).where(
                    confirmation_mails.c.email_key == email_key, confirmation_mails.c.id != own
                )
            ).scalars()
        )
        recent = [_aware(stamp) for stamp in earlier]
        if len(recent) + 1 > per_day or any(now - stamp < MIN_INTERVAL for stamp in recent):
            conn.execute(sa.delete(confirmation_mails).where(confirmation_mails.c.id == own))
            return False
    return True


def _aware(stamp: dt.datetime) -> dt.datetime:
    """SQLite hands back naive UTC times; PostgreSQL aware ones."""
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)
