"""Claims read the next pending rows in id order from an index: (issue, list_id, status, id) replaces
(issue, list_id, status), with which PostgreSQL sorted every pending row of the send at each claim
(a million-row send spent most of its time there). Also serves `mailer status` and `report`'s
counts by status without touching the table.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    op.create_index("ix_deliveries_issue_list_status_id", "deliveries", ["issue", "list_id", "status", "id"])
    op.drop_index("ix_deliveries_issue_list_status", "deliveries")


def downgrade() -> None:
    op.create_index("ix_deliveries_issue_list_status", "deliveries", ["issue", "list_id", "status"])
    op.drop_index("ix_deliveries_issue_list_status_id", "deliveries")
