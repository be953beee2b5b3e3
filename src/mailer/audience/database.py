"""The database behind lists, subscribers and deliveries: SQLite by default, PostgreSQL by URL.

Tables are defined once here; migrations/ (Alembic) creates and evolves them, and every
connection is migrated to the latest version when the database is opened.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import warnings
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError, DBAPIError, SAWarning

from mailer.errors import MailerError
from mailer.settings import mask_url_password

metadata = sa.MetaData()

lists = sa.Table(
    "lists",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(100), nullable=False, unique=True),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("public", sa.Boolean, nullable=False, server_default=sa.false()),
)

subscribers = sa.Table(
    "subscribers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("email_key", sa.String(320), nullable=False, unique=True),
    sa.Column("name", sa.String(300), nullable=False, server_default=""),
    sa.Column("attributes", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

memberships = sa.Table(
    "memberships",
    metadata,
    sa.Column("list_id", sa.Integer, sa.ForeignKey("lists.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_memberships_list_status", "list_id", "status"),
)

suppressions = sa.Table(
    "suppressions",
    metadata,
    sa.Column("email_key", sa.String(320), primary_key=True),
    sa.Column("reason", sa.String(16), nullable=False),
    sa.Column("note", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

confirmation_mails = sa.Table(
    "confirmation_mails",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("email_key", sa.String(320), nullable=False),
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_confirmation_mails_email_key", "email_key"),
)

delivery_events = sa.Table(
    "delivery_events",
    metadata,
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
    sa.Index("ix_delivery_events_issue_kind", "issue", "kind"),
    sa.Index("ix_delivery_events_subscriber", "subscriber_id", "created_at"),
)
"""What came back about a delivery, one row per event: a bounce (`hard`, `soft`, `unknown`), a `complaint`, an
`unsubscribe` through an issue's signed link, or a `resubscribe` that lifted a suppression. `status` is the
enhanced status code (5.1.1), `diagnostic` the server's words or the reason given, `source` the Message-ID
of the bounce or report it came in (`smtp` for a refusal during the send, `web` for the unsubscribe page).
"""

bounce_messages = sa.Table(
    "bounce_messages",
    metadata,
    sa.Column("message_id", sa.String(300), primary_key=True),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
)
"""Each message read from the bounce mailbox, by Message-ID (or a digest of its bytes): read once, counted once."""

EVENT_KINDS = ("hard", "soft", "complaint", "unknown", "unsubscribe", "resubscribe")

ONE_COPY = "status <> 'skipped' AND NOT allow_duplicate"
"""The rows that hold a person's one copy of an issue: the predicate of the partial unique index uq_deliveries_one_copy."""

deliveries = sa.Table(
    "deliveries",
    metadata,
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
    sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("allow_duplicate", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("covered_by", sa.Integer, nullable=True),
    sa.UniqueConstraint("issue", "list_id", "subscriber_id", name="uq_deliveries_recipient"),
    sa.Index("ix_deliveries_issue_list_status_id", "issue", "list_id", "status", "id"),
    sa.Index("ix_deliveries_issue_subscriber", "issue", "subscriber_id"),
    sa.Index("ix_deliveries_subscriber_sent", "subscriber_id", "sent_at"),
    sa.Index(
        "ix_deliveries_uncertain",
        "issue",
        "list_id",
        "status",
        sqlite_where=sa.text("uncertain = 1"),  # as SQLAlchemy writes `uncertain == true()`: SQLite matches it exactly
        postgresql_where=sa.text("uncertain"),
    ),
    sa.Index(
        "uq_deliveries_one_copy",
        "issue",
        "subscriber_id",
        unique=True,
        sqlite_where=sa.text(ONE_COPY),
        postgresql_where=sa.text(ONE_COPY),
    ),
)
"""One row per (issue, list, recipient). `allow_duplicate` marks a row sent on purpose to someone another list
already had (--allow-duplicates, or sent twice before migration 0006); `covered_by` is the list whose row
makes a `skipped` row unnecessary ("gets it through 'staff'"). Of the rows of one issue and one person,
at most one that is not skipped and not an allowed duplicate exists: the database enforces one copy per person
(uq_deliveries_one_copy), whatever senders run at the same time.
"""

SUBSCRIBED = "subscribed"
UNSUBSCRIBED = "unsubscribed"
SUPPRESSION_REASONS = ("unsubscribed", "bounced", "complaint", "blocked")

MIGRATIONS = Path(__file__).parent / "migrations"


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def update_each(conn: Connection, table: sa.Table, rows: list[dict[str, Any]], **values: Any) -> None:
    """One executemany UPDATE: each row dict carries `row_id` and the values its bind parameters name."""
    conn.execute(sa.update(table).where(table.c.id == sa.bindparam("row_id")).values(**values), rows)


def head_revision() -> str:
    """The newest migration, from the file names (NNNN_what.py): no need to import Alembic to know it."""
    return max(path.name.split("_", 1)[0] for path in (MIGRATIONS / "versions").glob("[0-9]*_*.py"))


def _is_current(engine: Engine) -> bool:
    with engine.connect() as connection:
        if not sa.inspect(connection).has_table("alembic_version"):
            return False
        version = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    return version == head_revision()


def _migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration; Alembic (about 11 MB) is imported only when there is work."""
    if _is_current(engine):
        return
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


SUPPORTED_DRIVERS = {"sqlite": ("pysqlite",), "postgresql": ("psycopg",)}
"""The database drivers mailer is tested with: SQLite as Python ships it, PostgreSQL through psycopg 3."""
USE_INSTEAD = "use sqlite:///path.sqlite3 or postgresql+psycopg://user@host/db"


def open_database(url: str) -> Engine:
    """Connect, creating the SQLite file and the tables on first use."""
    shown = mask_url_password(url)
    try:
        parsed = sa.make_url(url)
    except ArgumentError:
        raise MailerError(f"database_url: cannot parse {shown!r}; {USE_INSTEAD}") from None
    except ValueError:  # SQLAlchemy takes whatever follows a colon after the host for the port
        raise MailerError(
            f"database_url: cannot parse {shown!r}: the port is not a number (an IPv6 host goes in brackets, [::1])"
        ) from None
    backend = parsed.get_backend_name()
    if backend not in SUPPORTED_DRIVERS or parsed.get_driver_name() not in SUPPORTED_DRIVERS[backend]:
        raise MailerError(f"database_url {shown}: {parsed.drivername} is not supported; {USE_INSTEAD}")
    if backend == "sqlite" and (parsed.username or parsed.password or parsed.host or parsed.port):
        raise MailerError(
            f"database_url {shown}: a SQLite URL names a file, not a user or host: "
            "sqlite:///relative/path.sqlite3 or sqlite:////absolute/path.sqlite3"
        )
    if "\x00" in url or "%00" in url:
        raise MailerError(f"database_url {shown}: contains a NUL character (%00)")
    if backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
        folder = Path(parsed.database).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise MailerError(
                f"database {shown}: cannot create the folder {error.filename or folder}: {error.strerror}; "
                "point database_url at a folder you can write"
            ) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", SAWarning)  # e.g. a query option the driver would ignore
            engine = sa.create_engine(parsed, future=True)
    except (ArgumentError, ValueError, SAWarning) as error:
        reason = mask_url_password(str(error).strip().splitlines()[0].partition(" (Background on this")[0])
        raise MailerError(f"database_url {shown}: {reason}") from None
    if backend == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    try:
        _migrate(engine)
    except DBAPIError as error:
        engine.dispose()
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        if backend == "sqlite" and isinstance(error.orig, sqlite3.DatabaseError):
            reason += "; point database_url at a new file or one mailer created"
        raise MailerError(f"database {shown}: {reason}") from None
    return engine


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")  # WAL stays consistent; a power cut may lose the last commits
    cursor.execute("PRAGMA busy_timeout = 10000")
    cursor.close()
