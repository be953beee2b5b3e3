"""Subscribers in and out as CSV: forgiving about the file's shape, strict about addresses."""

from __future__ import annotations

import csv
import io
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
from mailer.audience.lists import list_id_in, mailable_subscribers, subscriber_problem, text_problem
from mailer.errors import MailerError

EMAIL_HEADERS = ("email", "e-mail", "email address", "e-mail address", "mail")
NAME_HEADERS = ("name", "full name")
CHUNK = 500
SCAN_THRESHOLD = 5_000
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


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise MailerError(f"{path}: cannot read: {error.strerror}; nothing was imported") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise MailerError(f"{path}:{line}: not UTF-8 text; save the file as UTF-8 CSV; nothing was imported") from None


def _delimiter(text: str) -> str:
    """The separator the header line uses most: spreadsheets in many locales write ';' instead of ','."""
    header = next((line for line in text[:65536].splitlines() if line.strip()), "")
    return max(",;\t|", key=header.count)


def read_rows(
    path: Path, *, special_use_domains: Collection[str] = ()
) -> tuple[list[Row], list[tuple[int, str]], list[tuple[int, str]]]:
    """Valid rows, invalid (line, reason) and duplicate (line, reason); raises if the file itself is unusable."""
    text = _read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text))
    try:
        header = next((row for row in reader if any(cell.strip() for cell in row)), None)
    except csv.Error as error:
        raise MailerError(f"{path}:{reader.line_num}: not valid CSV ({error}); nothing was imported") from None
    if header is None:
        raise MailerError(f"{path}: the file is empty; it needs a header row with an email column")
    header = [from_spreadsheet(cell) for cell in header]
    names = [clean_text(cell).lower() for cell in header]
    email_col = next((i for i, name in enumerate(names) if name in EMAIL_HEADERS), None)
    if email_col is None:
        found = ", ".join(clean_text(cell) for cell in header) or "nothing"
        raise MailerError(
            f"{path}:{reader.line_num}: no email column in the header (found: {found}); name one column 'email'"
        )
    name_col = next((i for i, name in enumerate(names) if name in NAME_HEADERS), None)
    attribute_cols = [
        (i, label)
        for i in range(len(header))
        if i not in (email_col, name_col) and (label := attribute_name(header[i]))
    ]
    for _, label in attribute_cols:
        problem = text_problem("column name", label)
        if problem:
            raise MailerError(f"{path}:{reader.line_num}: {problem}; nothing was imported")

    rows: list[Row] = []
    invalid: list[tuple[int, str]] = []
    duplicates: list[tuple[int, str]] = []
    first_line: dict[str, int] = {}
    read_up_to = reader.line_num
    try:
        for cells in reader:
            line, read_up_to = read_up_to + 1, reader.line_num  # a quoted field may span lines: name the first
            if not any(cell.strip() for cell in cells):
                continue
            cells = [from_spreadsheet(cell) for cell in cells]
            cells += [""] * (len(header) - len(cells))
            address = cells[email_col].strip()
            if not address:
                invalid.append((line, "no email address"))
                continue
            try:
                email, key = normalise_email(address, special_use_domains=special_use_domains)
            except InvalidAddress as error:
                invalid.append((line, f"{address}: {error}"))
                continue
            name = clean_text(cells[name_col]) if name_col is not None else ""
            attributes = {label: value for i, label in attribute_cols if (value := clean_text(cells[i]))}
            problem = subscriber_problem(name, attributes)
            if problem:
                invalid.append((line, f"{email}: {problem}"))
                continue
            if key in first_line:
                duplicates.append((line, f"{email} is a duplicate of line {first_line[key]}"))
                continue
            first_line[key] = line
            rows.append(Row(line, email, key, name, attributes))
    except csv.Error as error:
        raise MailerError(f"{path}:{reader.line_num}: not valid CSV ({error}); nothing was imported") from None
    return rows, invalid, duplicates


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def _existing(conn: Connection, keys: list[str]) -> tuple[dict[str, Any], set[str]]:
    """Subscribers and suppressions among `keys`: looked up in chunks for a small file, by one scan for a big one."""
    columns = (subscribers.c.id, subscribers.c.email_key, subscribers.c.name, subscribers.c.attributes)
    if len(keys) <= SCAN_THRESHOLD:
        queries = [
            (
                sa.select(*columns).where(subscribers.c.email_key.in_(chunk)),
                sa.select(suppressions.c.email_key).where(suppressions.c.email_key.in_(chunk)),
            )
            for chunk in _chunks(keys)
        ]
    else:
        queries = [(sa.select(*columns), sa.select(suppressions.c.email_key))]
    wanted = set(keys)
    known: dict[str, Any] = {}
    suppressed: set[str] = set()
    for subscriber_query, suppression_query in queries:
        for row in conn.execute(subscriber_query).mappings():
            if row["email_key"] in wanted:
                known[row["email_key"]] = row
        suppressed.update(key for key in conn.execute(suppression_query).scalars() if key in wanted)
    return known, suppressed


def import_subscribers(
    engine: Engine, list_name: str, path: Path, *, dry_run: bool = False, special_use_domains: Collection[str] = ()
) -> ImportReport:
    """Import in one transaction: all valid rows or, if the file is unusable, nothing.

    Suppressed addresses and those who unsubscribed from this list are never re-subscribed.
    """
    rows, invalid, duplicates = read_rows(path, special_use_domains=special_use_domains)
    report = ImportReport(str(path), invalid=invalid, skipped=list(duplicates), dry_run=dry_run)
    stamp = now()
    with engine.connect() as conn, conn.begin() as transaction:
        lid = list_id_in(conn, list_name)
        known, suppressed = _existing(conn, [row.key for row in rows])
        statuses = {
            sid: status
            for sid, status in conn.execute(
                sa.select(memberships.c.subscriber_id, memberships.c.status).where(memberships.c.list_id == lid)
            )
        }
        new_subscribers: list[dict[str, Any]] = []
        changed_subscribers: list[dict[str, Any]] = []
        new_members: list[Row] = []
        for row in rows:
            if row.key in suppressed:
                report.skipped.append((row.line, f"{row.email} is suppressed and is never mailed"))
                continue
            existing = known.get(row.key)
            if existing is None:
                new_subscribers.append(
                    {"email": row.email, "email_key": row.key, "name": row.name, "attributes": row.attributes}
                )
                new_members.append(row)
                report.added += 1
                continue
            status = statuses.get(existing["id"])
            if status is not None and status != SUBSCRIBED:
                report.skipped.append(
                    (row.line, f"{row.email} unsubscribed from '{list_name}' and is not subscribed again")
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
                new_members.append(row)
                report.added += 1
            elif differs:
                report.updated += 1
            else:
                report.unchanged += 1
        if new_subscribers:
            # a plain executemany, then the ids read back: RETURNING would make SQLite insert row by row
            conn.execute(sa.insert(subscribers).values(created_at=stamp, updated_at=stamp), new_subscribers)
            known.update(_existing(conn, [row["email_key"] for row in new_subscribers])[0])
        if changed_subscribers:
            update_each(
                conn,
                subscribers,
                changed_subscribers,
                name=sa.bindparam("new_name"),
                attributes=sa.bindparam("new_attributes"),
                updated_at=sa.bindparam("stamp"),
            )
        if new_members:
            conn.execute(
                sa.insert(memberships).values(list_id=lid, status=SUBSCRIBED, changed_at=stamp),
                [{"subscriber_id": known[row.key]["id"]} for row in new_members],
            )
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
