"""The delivery ledger: one row per (issue, list, recipient).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("issue", sa.String(100), nullable=False),
        sa.Column("list_id", sa.Integer, sa.ForeignKey("lists.id", ondelete="CASCADE"), nullable=False),
        sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("permanent", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("uncertain", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("reply", sa.Text, nullable=False, server_default=""),
        sa.Column("message_id", sa.String(200), nullable=False, server_default=""),
        sa.Column("claimed_by", sa.String(100), nullable=False, server_default=""),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("issue", "list_id", "subscriber_id", name="uq_deliveries_recipient"),
    )
    op.create_index("ix_deliveries_issue_list_status", "deliveries", ["issue", "list_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_issue_list_status", "deliveries")
    op.drop_table("deliveries")
