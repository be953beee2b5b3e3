"""The delivery loop: what came back about each delivery (bounces, complaints, unsubscribes) and which bounce
mailbox messages were read; an index on each subscriber's deliveries (bounce matching, `subscribers show`). A suppression for a spam complaint is now called `complaint`, as events name it.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    op.create_table(
        "delivery_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("issue", sa.String(100), nullable=True),
        sa.Column("list_id", sa.Integer, sa.ForeignKey("lists.id", ondelete="SET NULL"), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default=""),
        sa.Column("diagnostic", sa.Text, nullable=False, server_default=""),
        sa.Column("source", sa.String(300), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_delivery_events_issue_kind", "delivery_events", ["issue", "kind"])
    op.create_index("ix_delivery_events_subscriber", "delivery_events", ["subscriber_id", "created_at"])
    op.create_table(
        "bounce_messages",
        sa.Column("message_id", sa.String(300), primary_key=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_deliveries_subscriber_sent", "deliveries", ["subscriber_id", "sent_at"])
    op.execute("UPDATE suppressions SET reason = 'complaint' WHERE reason = 'complained'")


def downgrade() -> None:
    op.execute("UPDATE suppressions SET reason = 'complained' WHERE reason = 'complaint'")
    op.drop_index("ix_deliveries_subscriber_sent", "deliveries")
    op.drop_table("bounce_messages")
    op.drop_table("delivery_events")
