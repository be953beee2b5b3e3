"""`mailer status` lists the rows resent after a crash (uncertain and sent): a partial index holds just
those, so the list is found without reading every sent row (0.2 s of a million-row status).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"


def upgrade() -> None:
    op.create_index(
        "ix_deliveries_uncertain",
        "deliveries",
        ["issue", "list_id", "status"],
        sqlite_where=sa.text("uncertain = 1"),  # as SQLAlchemy writes `uncertain == true()`: SQLite matches it exactly
        postgresql_where=sa.text("uncertain"),
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_uncertain", "deliveries")
