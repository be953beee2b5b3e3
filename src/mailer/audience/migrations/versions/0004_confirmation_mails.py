"""When each address was sent a confirmation mail: the per-address limit of the web subscribe form.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.create_table(
        "confirmation_mails",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email_key", sa.String(320), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_confirmation_mails_email_key", "confirmation_mails", ["email_key"])


def downgrade() -> None:
    op.drop_table("confirmation_mails")
