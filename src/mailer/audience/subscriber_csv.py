"""Subscribers in and out as CSV: forgiving about the file's shape, strict about addresses."""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import json
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from mailer.audience.addresses import InvalidAddress, normalise_email
from mailer.audience.clean_text import clean_text
from mailer.audience.database import SUBSCRIBED, memberships, now, subscribers, suppressions, update_each
from mailer.audience.driver_statement import insert_many
from mailer.audience.lists import list_id_in, mailable_subscribers, subscriber_problem, text_problem
from mailer.errors import MailerError

EMAIL_HEADERS = ("email", "e-mail", "email address", "e-mail address", "mail")
NAME_HEADERS = ("name", "full name")
CHUNK = 500
"""Addresses per IN (...) lookup."""
CHUNK_ROWS = 5_000
"""Rows of the file checked and written together: the import's memory is about this many rows, whatever the file's size."""
FORMULA = re.compile(r"'*[=+\-@\t\r]")
"""A cell a spreadsheet could take for a formula (OWASP CSV injection), after any quotes added to defuse it."""


def spreadsheet_safe(cell: str) -> str:
    """Export: prefix a quote to a cell that starts like a formula, so spreadsheets show it as text.

    A cell that is already quotes then such a character gets one more, so `from_spreadsheet` gives back every value.
    """
    return f"'{cell}" if FORMULA.match(cell) else cell


def from_spreadsheet(cell: str) -> str:
    """Import: drop the one quote `spreadsheet_safe` (or a person in a spreadsheet) put before a formula-like cell."""
    return cell[1:] if cell.startswith("'") and FORMULA.match(cell) else cell


@dataclass(frozen=True)
class Row:
    line: int
    email: str
    key: str
    name: str
    attributes: dict[str, str]


@dataclass
class ImportReport:
    path: str
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    invalid: list[tuple[int, str]] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    dry_run: bool = False

    def lines(self) -> list[str]:
        head = (
            f"{self.path}: {self.added} added, {self.updated} updated, {self.unchanged} unchanged, "
            f"{len(self.invalid)} invalid, {len(self.skipped)} skipped"
        )
        rows = [(line, f"{self.path}:{line}: invalid: {reason}") for line, reason in self.invalid]
        rows += [(line, f"{self.path}:{line}: skipped: {reason}") for line, reason in self.skipped]
        tail = ["dry run: nothing was written"] if self.dry_run else []
        return [head, *(text for _, text in sorted(rows, key=lambda row: row[0])), *tail]


def attribute_name(label: str) -> str:
    """'Preferred Language' -> 'preferred_language': the key the attribute is stored and exported under."""
    return clean_text(label).lower().replace(" ", "_")


def _open_text(path: Path) -> TextIO:
    try:
        return path.open(encoding="utf-8-sig", newline="")
    except OSError as error:
        raise MailerError(f"{path}: cannot read: {error.strerror}; nothing was imported") from None


def _not_utf8(path: Path) -> MailerError:
    """The line of the first byte that is not UTF-8, found by a second pass over the bytes (only on this error)."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    line = 1
    with path.open("rb") as raw:
        while block := raw.read(1 << 20):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as error:
                line += block[: max(error.start, 0)].count(b"\n")
                break
            line += block.count(b"\n")
    return MailerError(f"{path}:{line}: not UTF-8 text; save the file as UTF-8 CSV; nothing was imported")


def _delimiter(text: str) -> str:
    """The separator the header line uses most: spreadsheets in many locales write ';' instead of ','."""
    header = next((line for line in text[:65536].splitlines() if line.strip()), "")
    return max(",;\t|", key=header.count)


@dataclass(frozen=True)
class _Columns:
    email: int
    name: int | None
    attributes: list[tuple[int, str]]
    width: int


def _columns(path: Path, header: list[str] | None, line: int) -> _Columns:
    if header is None:
        raise MailerError(f"{path}: the file is empty; it needs a header row with an email column")
    header = [from_spreadsheet(cell) for cell in header]
    names = [clean_text(cell).lower() for cell in header]
    email_col = next((i for i, name in enumerate(names) if name in EMAIL_HEADERS), None)
    if email_col is None:
        found = ", ".join(clean_text(cell) for cell in header) or "nothing"
        raise MailerError(f"{path}:{line}: no email column in the header (found: {found}); name one column 'email'")
    name_col = next((i for i, name in enumerate(names) if name in NAME_HEADERS), None)
    attribute_cols = [
        (i, label)
        for i in range(len(header))
        if i not in (email_col, name_col) and (label := attribute_name(header[i]))
    ]
    for _, label in attribute_cols:
        problem = text_problem("column name", label)
        if problem:
            raise MailerError(f"{path}:{line}: {problem}; nothing was imported")
    return _Columns(email_col, name_col, attribute_cols, len(header))


def parse_rows(
    path: Path, invalid: list[tuple[int, str]], *, special_use_domains: Collection[str] = ()
) -> Iterator[Row]:
    """Each valid row as the file is read, a line at a time; invalid (line, reason) are added to `invalid`.

    Duplicates are not looked for here (import_subscribers does, in the database). Raises
    MailerError, naming the line, if the file itself is unusable: not UTF-8, not CSV, no email column.
    """
    with _open_text(path) as text:
        try:
            head = text.read(65536)
            text.seek(0)
            reader = csv.reader(text, delimiter=_delimiter(head))
            try:
                header = next((row for row in reader if any(cell.strip() for cell in row)), None)
                columns = _columns(path, header, reader.line_num)
                read_up_to = reader.line_num
                for cells in reader:
                    line, read_up_to = read_up_to + 1, reader.line_num  # a quoted field may span lines: name the first
                    if (row := _row(line, cells, columns, invalid, special_use_domains)) is not None:
                        yield row
            except csv.Error as error:
                raise MailerError(f"{path}:{reader.line_num}: not valid CSV ({error}); nothing was imported") from None
        except UnicodeDecodeError:
            raise _not_utf8(path) from None


def _row(
    line: int,
    cells: list[str],
    columns: _Columns,
    invalid: list[tuple[int, str]],
    special_use_domains: Collection[str],
) -> Row | None:
    if not any(cell.strip() for cell in cells):
        return None
    cells = [from_spreadsheet(cell) for cell in cells]
    cells += [""] * (columns.width - len(cells))
    address = cells[columns.email].strip()
    if not address:
        invalid.append((line, "no email address"))
        return None
    try:
        email, key = normalise_email(address, special_use_domains=special_use_domains)
    except InvalidAddress as error:
        invalid.append((line, f"{address}: {error}"))
        return None
    name = clean_text(cells[columns.name]) if columns.name is not None else ""
    attributes = {label: value for i, label in columns.attributes if (value := clean_text(cells[i]))}
    problem = subscriber_problem(name, attributes)
    if problem:
        invalid.append((line, f"{email}: {problem}"))
        return None
    return Row(line, email, key, name, attributes)


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


_seen_lines = sa.Table(
    "import_seen_lines",
    sa.MetaData(),
    sa.Column("email_key", sa.String(320), primary_key=True),
    sa.Column("line", sa.Integer, nullable=False),
    prefixes=["TEMPORARY"],
)
"""The first line of each address in the file being imported: duplicates are found here, not in memory."""


@dataclass
class _Import:
    """One import's transaction: each chunk of the file is checked and written before the next is read."""

    conn: Connection
    list_id: int
    list_name: str
    report: ImportReport
    stamp: dt.datetime
    seen: int = 0
    """Addresses of the file so far: an upper bound on the rows this transaction added to each table."""
    next_analyze: int = CHUNK_ROWS

    def __post_init__(self) -> None:
        dialect = self.conn.dialect
        processor = subscribers.c.created_at.type.dialect_impl(dialect).bind_processor(dialect)
        self.stored_stamp = processor(self.stamp) if processor else self.stamp

    def first_lines(self, rows: list[Row]) -> list[Row]:
        """The rows whose address the file has not had before; the others are reported as duplicates."""
        earlier: dict[str, int] = {}
        for keys in _chunks([row.key for row in rows]):
            query = sa.select(_seen_lines.c.email_key, _seen_lines.c.line).where(_seen_lines.c.email_key.in_(keys))
            earlier.update(self.conn.execute(query).all())
        first: list[Row] = []
        for row in rows:
            if row.key in earlier:
                self.report.skipped.append((row.line, f"{row.email} is a duplicate of line {earlier[row.key]}"))
            else:
                earlier[row.key] = row.line
                first.append(row)
        insert_many(self.conn, _seen_lines, ("email_key", "line"), [(row.key, row.line) for row in first])
        return first

    def existing(self, keys: list[str]) -> tuple[dict[str, Any], set[str]]:
        """Subscribers and suppressions among `keys`."""
        columns = (subscribers.c.id, subscribers.c.email_key, subscribers.c.name, subscribers.c.attributes)
        known: dict[str, Any] = {}
        suppressed: set[str] = set()
        for chunk in _chunks(keys):
            for row in self.conn.execute(sa.select(*columns).where(subscribers.c.email_key.in_(chunk))).mappings():
                known[row["email_key"]] = row
            query = sa.select(suppressions.c.email_key).where(suppressions.c.email_key.in_(chunk))
            suppressed.update(self.conn.execute(query).scalars())
        return known, suppressed

    def statuses(self, subscriber_ids: list[int]) -> dict[int, str]:
        found: dict[int, str] = {}
        for start in range(0, len(subscriber_ids), CHUNK):
            query = sa.select(memberships.c.subscriber_id, memberships.c.status).where(
                memberships.c.list_id == self.list_id,
                memberships.c.subscriber_id.in_(subscriber_ids[start : start + CHUNK]),
            )
            found.update(self.conn.execute(query).all())
        return found

    def ids(self, keys: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for chunk in _chunks(keys):
            query = sa.select(subscribers.c.email_key, subscribers.c.id).where(subscribers.c.email_key.in_(chunk))
            found.update(self.conn.execute(query).all())
        return found

    def write(self, rows: list[Row]) -> None:
        """Add, update or leave each row of one chunk, as the report then says."""
        report, stamp = self.report, self.stamp
        rows = self.first_lines(rows)
        known, suppressed = self.existing([row.key for row in rows])
        statuses = self.statuses([known[row.key]["id"] for row in rows if row.key in known])
        new_subscribers: list[Row] = []
        changed_subscribers: list[dict[str, Any]] = []
        members: list[int] = []
        for row in rows:
            if row.key in suppressed:
                report.skipped.append((row.line, f"{row.email} is suppressed and is never mailed"))
                continue
            existing = known.get(row.key)
            if existing is None:
                new_subscribers.append(row)
                report.added += 1
                continue
            status = statuses.get(existing["id"])
            if status is not None and status != SUBSCRIBED:
                report.skipped.append(
                    (row.line, f"{row.email} unsubscribed from '{self.list_name}' and is not subscribed again")
                )
                continue
            merged = {**existing["attributes"], **row.attributes}
            name = row.name or existing["name"]
            differs = merged != existing["attributes"] or name != existing["name"]
            if differs:
                changed_subscribers.append(
                    {"row_id": existing["id"], "new_name": name, "new_attributes": merged, "stamp": stamp}
                )
            if status is None:
                members.append(existing["id"])
                report.added += 1
            elif differs:
                report.updated += 1
            else:
                report.unchanged += 1
        if new_subscribers:
            when = self.stored_stamp
            insert_many(
                self.conn,
                subscribers,
                ("email", "email_key", "name", "attributes", "created_at", "updated_at"),
                [(row.email, row.key, row.name, json.dumps(row.attributes), when, when) for row in new_subscribers],
            )
            members += self.ids([row.key for row in new_subscribers]).values()
        if changed_subscribers:
            update_each(
                self.conn,
                subscribers,
                changed_subscribers,
                name=sa.bindparam("new_name"),
                attributes=sa.bindparam("new_attributes"),
                updated_at=sa.bindparam("stamp"),
            )
        if members:
            insert_many(
                self.conn,
                memberships,
                ("list_id", "subscriber_id", "status", "changed_at"),
                [(self.list_id, member, SUBSCRIBED, self.stored_stamp) for member in members],
            )
        self.seen += len(rows)
        if self.seen >= self.next_analyze:
            self.analyze()
            self.next_analyze = 2 * self.seen

    def analyze(self) -> None:
        """PostgreSQL: refresh the planner's row counts while this transaction grows the tables.

        Autovacuum cannot see rows not yet committed (nor ever a temporary table), so a list
        imported into empty tables would be looked up as if they were still tiny: a full scan per
        chunk, 10 s a chunk at 100,000 rows. Done each time the addresses seen double, a handful
        of times for a million.
        """
        if self.conn.dialect.name == "postgresql":
            for table in (_seen_lines, subscribers, memberships):
                self.conn.exec_driver_sql(f"ANALYZE {table.name}")


def import_subscribers(
    engine: Engine, list_name: str, path: Path, *, dry_run: bool = False, special_use_domains: Collection[str] = ()
) -> ImportReport:
    """Import in one transaction: all valid rows or, if the file is unusable (or the import is killed), nothing.

    The file is read and written CHUNK_ROWS rows at a time, so memory stays flat however long it
    is. Suppressed addresses and those who unsubscribed from this list are never re-subscribed.
    """
    report = ImportReport(str(path), dry_run=dry_run)
    with engine.connect() as conn, conn.begin() as transaction:
        work = _Import(conn, list_id_in(conn, list_name), list_name, report, now())
        _seen_lines.drop(conn, checkfirst=True)  # SQLite runs CREATE outside the transaction: one may be left over
        _seen_lines.create(conn)
        try:
            chunk: list[Row] = []
            for row in parse_rows(path, report.invalid, special_use_domains=special_use_domains):
                chunk.append(row)
                if len(chunk) == CHUNK_ROWS:
                    work.write(chunk)
                    chunk = []
            if chunk:
                work.write(chunk)
        finally:
            _seen_lines.drop(conn, checkfirst=True)
        if dry_run:
            transaction.rollback()
    return report


def export_subscribers(engine: Engine, list_name: str, out: TextIO) -> int:
    """Write who would be mailed as CSV (email, name, then every attribute); returns the row count.

    Cells that start like a spreadsheet formula are defused with a leading quote; import removes it.
    """
    attribute_names = sorted({name for member in mailable_subscribers(engine, list_name) for name in member.attributes})
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([spreadsheet_safe(cell) for cell in ["email", "name", *attribute_names]])
    count = 0
    for member in mailable_subscribers(engine, list_name):
        cells = [member.email, member.name, *(member.attributes.get(name, "") for name in attribute_names)]
        writer.writerow([spreadsheet_safe(str(cell)) for cell in cells])
        count += 1
    return count
