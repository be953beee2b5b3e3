"""One copy per person: at most one row of an issue and a person holds "the copy", whatever the lists.

Adds `allow_duplicate` and `covered_by` to deliveries, an index on (issue, subscriber_id) and the partial
unique index uq_deliveries_one_copy over rows that are not skipped and not allowed duplicates.

A database from before may hold an issue sent to two lists that share people. For each issue and person,
the row furthest along (sent, then uncertain, sending, failed, pending; the oldest first) keeps the copy.
Every other row that may already be in an inbox (sent, uncertain, sending) is flagged an allowed duplicate:
that is what happened. One not yet sent (pending, failed) becomes skipped, covered by the keeper's list, as a
send under the new rules would have recorded it.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from typing import TypeVar

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"

ONE_COPY = "status <> 'skipped' AND NOT allow_duplicate"
MAY_HAVE_ARRIVED = ("sent", "uncertain", "sending")
NOT_YET_SENT = ("pending", "failed")
T = TypeVar("T")

lists = sa.table("lists", sa.column("id", sa.Integer), sa.column("name", sa.String))
deliveries = sa.table(
    "deliveries",
    sa.column("id", sa.Integer),
    sa.column("issue", sa.String),
    sa.column("list_id", sa.Integer),
    sa.column("subscriber_id", sa.Integer),
    sa.column("status", sa.String),
    sa.column("reply", sa.Text),
    sa.column("allow_duplicate", sa.Boolean),
    sa.column("covered_by", sa.Integer),
)


keeper = deliveries.alias("keeper")


def _keeps(column: sa.ColumnElement[T]) -> sa.ScalarSelect[T]:
    """`column` of the row that keeps the copy of the issue, for the person of the `deliveries` row being updated.

    That row is the one furthest along (sent, uncertain, sending, failed, pending), the oldest of those.
    """
    rank = sa.case({"sent": 0, "uncertain": 1, "sending": 2, "failed": 3}, value=keeper.c.status, else_=4)
    return (
        sa.select(column)
        .select_from(keeper.join(lists, lists.c.id == keeper.c.list_id))
        .where(
            keeper.c.issue == deliveries.c.issue,
            keeper.c.subscriber_id == deliveries.c.subscriber_id,
            keeper.c.status != "skipped",
        )
        .order_by(rank, keeper.c.id)
        .limit(1)
        .correlate(deliveries)
        .scalar_subquery()
    )


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("allow_duplicate", sa.Boolean, nullable=False, server_default=sa.false()))
    op.add_column("deliveries", sa.Column("covered_by", sa.Integer, nullable=True))
    op.create_index("ix_deliveries_issue_subscriber", "deliveries", ["issue", "subscriber_id"])

    duplicate = sa.and_(deliveries.c.status != "skipped", deliveries.c.id != _keeps(keeper.c.id))
    op.execute(
        sa.update(deliveries)
        .where(duplicate, deliveries.c.status.in_(MAY_HAVE_ARRIVED))
        .values(allow_duplicate=sa.true())
    )
    op.execute(
        sa.update(deliveries)
        .where(duplicate, deliveries.c.status.in_(NOT_YET_SENT))
        .values(
            status="skipped",
            covered_by=_keeps(keeper.c.list_id),
            reply=sa.literal("gets it through '") + _keeps(lists.c.name) + sa.literal("'"),
        )
    )
    op.create_index(
        "uq_deliveries_one_copy",
        "deliveries",
        ["issue", "subscriber_id"],
        unique=True,
        sqlite_where=sa.text(ONE_COPY),
        postgresql_where=sa.text(ONE_COPY),
    )


def downgrade() -> None:
    op.drop_index("uq_deliveries_one_copy", "deliveries")
    op.drop_index("ix_deliveries_issue_subscriber", "deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("covered_by")
        batch.drop_column("allow_duplicate")
