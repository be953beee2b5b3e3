"""Lists, subscribers and suppression, on a real SQLite file and the local PostgreSQL."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mailer.audience.database import memberships, subscribers
from mailer.audience.lists import (
    add_subscriber,
    create_list,
    list_summaries,
    mailable_subscribers,
    remove_subscriber,
    unsubscribe,
)
from mailer.audience.subscriber_csv import export_subscribers, import_subscribers
from mailer.errors import MailerError

MESSY = (
    "\ufeffE-Mail;Name;Preferred Language;Organisation\r\n"
    "\r\n"
    "ana@example.org;Ana Alves;pt;ICMPD\r\n"
    "BOB@Example.ORG;Bob;;\r\n"
    "not-an-email;Nobody;;\r\n"
    "bob@example.org;Bob again;en;\r\n"
    ";;;\r\n"
    "carla@example;Carla;;\r\n"
    "Dora@Example.org;Dora;de;UN\r\n"
)


def emails(engine: Engine, list_name: str) -> list[str]:
    return [s.email for s in mailable_subscribers(engine, list_name)]


def write(tmp_path: Path, text: str, name: str = "people.csv", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


@pytest.fixture
def staff(engine: Engine) -> Engine:
    create_list(engine, "staff", "All staff")
    create_list(engine, "press", "Journalists")
    return engine


def test_lists_with_counts(staff: Engine) -> None:
    add_subscriber(staff, "staff", "ana@example.org", name="Ana")
    add_subscriber(staff, "staff", "bob@example.org")
    add_subscriber(staff, "press", "bob@example.org")
    unsubscribe(staff, "bob@example.org")
    assert [(s.name, s.subscribed, s.unsubscribed, s.description) for s in list_summaries(staff)] == [
        ("press", 0, 1, "Journalists"),
        ("staff", 1, 1, "All staff"),
    ]


def test_list_names_are_unique_and_unknown_ones_get_a_hint(staff: Engine) -> None:
    with pytest.raises(MailerError, match="^list 'staff' already exists$"):
        create_list(staff, "staff")
    with pytest.raises(MailerError, match=r"^unknown list 'staf'; did you mean 'staff'\?$"):
        add_subscriber(staff, "staf", "ana@example.org")
    with pytest.raises(MailerError, match="^unknown list 'zzz'; known lists: press, staff$"):
        add_subscriber(staff, "zzz", "ana@example.org")


def test_addresses_are_validated_and_compared_case_insensitively(staff: Engine) -> None:
    assert add_subscriber(staff, "staff", "Ana@Example.org", name="Ana") == "added"
    assert add_subscriber(staff, "staff", "ana@EXAMPLE.ORG") == "unchanged"
    assert add_subscriber(staff, "staff", "ana@example.org", attributes={"language": "pt"}) == "updated"
    assert emails(staff, "staff") == ["Ana@example.org"]
    [ana] = mailable_subscribers(staff, "staff")
    assert (ana.name, ana.attributes) == ("Ana", {"language": "pt"})
    with pytest.raises(MailerError, match="^ana at example.org: An email address must have an @-sign.$"):
        add_subscriber(staff, "staff", "ana at example.org")


def test_suppression_wins_over_every_membership(staff: Engine, tmp_path: Path) -> None:
    add_subscriber(staff, "staff", "ana@example.org")
    add_subscriber(staff, "press", "ana@example.org")
    add_subscriber(staff, "press", "bob@example.org")
    assert unsubscribe(staff, "ANA@example.org") == 2
    assert emails(staff, "staff") == [] and emails(staff, "press") == ["bob@example.org"]
    with pytest.raises(MailerError, match="^ana@example.org is suppressed"):
        add_subscriber(staff, "staff", "ana@example.org")
    report = import_subscribers(staff, "staff", write(tmp_path, "email\nAna@Example.org\n"))
    assert report.lines() == [
        f"{tmp_path}/people.csv: 0 added, 0 updated, 0 unchanged, 0 invalid, 1 skipped",
        f"{tmp_path}/people.csv:2: skipped: Ana@example.org is suppressed and is never mailed",
    ]
    assert emails(staff, "staff") == []


def test_suppressing_an_address_nobody_has_yet_still_blocks_it(staff: Engine) -> None:
    assert unsubscribe(staff, "later@example.org", reason="complaint") == 0
    with pytest.raises(MailerError, match=r"suppressed \(complaint\)"):
        add_subscriber(staff, "press", "later@example.org")


def test_remove_takes_one_list_only(staff: Engine) -> None:
    add_subscriber(staff, "staff", "ana@example.org")
    add_subscriber(staff, "press", "ana@example.org")
    remove_subscriber(staff, "staff", "ana@example.org")
    assert emails(staff, "staff") == [] and emails(staff, "press") == ["ana@example.org"]
    with pytest.raises(MailerError, match="^ana@example.org is not on list 'staff'$"):
        remove_subscriber(staff, "staff", "ana@example.org")


def test_messy_csv_import_reports_every_row(staff: Engine, tmp_path: Path) -> None:
    path = write(tmp_path, MESSY)
    report = import_subscribers(staff, "staff", path)
    assert report.lines() == [
        f"{path}: 3 added, 0 updated, 0 unchanged, 2 invalid, 1 skipped",
        f"{path}:5: invalid: not-an-email: An email address must have an @-sign.",
        f"{path}:6: skipped: bob@example.org is a duplicate of line 4",
        f"{path}:8: invalid: carla@example: The part after the @-sign is not valid. It should have a period.",
    ]
    members = {s.email: (s.name, s.attributes) for s in mailable_subscribers(staff, "staff")}
    assert members == {
        "ana@example.org": ("Ana Alves", {"preferred_language": "pt", "organisation": "ICMPD"}),
        "BOB@example.org": ("Bob", {}),
        "Dora@example.org": ("Dora", {"preferred_language": "de", "organisation": "UN"}),
    }


def test_importing_the_same_file_twice_changes_nothing(staff: Engine, tmp_path: Path) -> None:
    path = write(tmp_path, MESSY)
    import_subscribers(staff, "staff", path)
    again = import_subscribers(staff, "staff", path)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 3)


def test_changed_rows_are_updated(staff: Engine, tmp_path: Path) -> None:
    import_subscribers(staff, "staff", write(tmp_path, "email,name\nana@example.org,Ana\nbob@example.org,Bob\n"))
    report = import_subscribers(
        staff, "staff", write(tmp_path, "email,name,team\nana@example.org,Ana A.,\nbob@example.org,Bob,\n")
    )
    assert (report.added, report.updated, report.unchanged) == (0, 1, 1)
    assert [s.name for s in mailable_subscribers(staff, "staff")] == ["Ana A.", "Bob"]


def test_dry_run_writes_nothing(staff: Engine, tmp_path: Path) -> None:
    report = import_subscribers(staff, "staff", write(tmp_path, MESSY), dry_run=True)
    assert report.added == 3 and report.lines()[-1] == "dry run: nothing was written"
    assert emails(staff, "staff") == []


def test_whoever_unsubscribed_from_the_list_is_not_resubscribed_by_import(staff: Engine, tmp_path: Path) -> None:
    add_subscriber(staff, "staff", "ana@example.org")
    add_subscriber(staff, "press", "ana@example.org")
    from mailer.audience.database import UNSUBSCRIBED, memberships
    from mailer.audience.lists import list_id

    with staff.begin() as conn:
        conn.execute(
            memberships.update().where(memberships.c.list_id == list_id(staff, "staff")).values(status=UNSUBSCRIBED)
        )
    report = import_subscribers(staff, "staff", write(tmp_path, "email\nana@example.org\n"))
    assert report.skipped == [(2, "ana@example.org unsubscribed from 'staff' and is not subscribed again")]
    assert emails(staff, "staff") == [] and emails(staff, "press") == ["ana@example.org"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "name;organisation\nAna;ICMPD\n",
            "people.csv:1: no email column in the header (found: name, organisation); name one column 'email'",
        ),
        ("", "people.csv: the file is empty; it needs a header row with an email column"),
    ],
)
def test_a_file_without_email_column_imports_nothing(staff: Engine, tmp_path: Path, content: str, message: str) -> None:
    with pytest.raises(MailerError) as caught:
        import_subscribers(staff, "staff", write(tmp_path, content))
    assert str(caught.value) == f"{tmp_path}/{message}"
    assert emails(staff, "staff") == []


def test_an_unreadable_file_imports_nothing(staff: Engine, tmp_path: Path) -> None:
    path = write(tmp_path, "email,name\nana@example.org,Ana\nbob@example.org,José\n", encoding="latin-1")
    with pytest.raises(
        MailerError, match=r"people.csv:3: not UTF-8 text; save the file as UTF-8 CSV; nothing was imported$"
    ):
        import_subscribers(staff, "staff", path)
    assert emails(staff, "staff") == []


def test_export_round_trips_through_import(staff: Engine, tmp_path: Path) -> None:
    import_subscribers(staff, "staff", write(tmp_path, MESSY))
    out = io.StringIO()
    assert export_subscribers(staff, "staff", out) == 3
    assert out.getvalue().splitlines() == [
        "email,name,organisation,preferred_language",
        "ana@example.org,Ana Alves,ICMPD,pt",
        "BOB@example.org,Bob,,",
        "Dora@example.org,Dora,UN,de",
    ]
    report = import_subscribers(staff, "press", write(tmp_path, out.getvalue(), "export.csv"))
    assert report.added == 3 and report.invalid == []
    assert emails(staff, "press") == emails(staff, "staff")


def test_a_database_from_an_older_version_is_upgraded_when_opened(database_url: str) -> None:
    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    from mailer.audience.database import MIGRATIONS, open_database

    old = sa.create_engine(database_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with old.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
    with old.connect() as connection:
        assert not sa.inspect(connection).has_table("deliveries")
    old.dispose()

    engine = open_database(database_url)
    with engine.connect() as connection:
        assert sa.inspect(connection).has_table("deliveries")
    create_list(engine, "staff")
    assert list_summaries(engine)[0].name == "staff"
    engine.dispose()


def test_the_newest_migration_file_is_alembics_head() -> None:
    from alembic.script import ScriptDirectory

    from mailer.audience.database import MIGRATIONS, head_revision

    assert head_revision() == ScriptDirectory(str(MIGRATIONS)).get_current_head()


def test_imported_rows_read_back_like_rows_added_one_by_one(staff: Engine, tmp_path: Path) -> None:
    """The import writes through the driver in bulk: dates, attributes and names must come back
    exactly as SQLAlchemy writes them for a subscriber added alone (same types, same time zone)."""
    add_subscriber(staff, "staff", "alone@example.org", name="Alone", attributes={"language": "fr"})
    import_subscribers(staff, "staff", write(tmp_path, "email,name,language\nbulk@example.org,Bulk Zoë,fr\n"))
    with staff.connect() as connection:
        latest = connection.execute(sa.select(subscribers.c.email).order_by(subscribers.c.created_at.desc())).scalars()
        assert list(latest) == ["bulk@example.org", "alone@example.org"]  # stored alike: the later one sorts first
        found = {
            row.email: row
            for row in connection.execute(
                sa.select(subscribers.c.email, subscribers.c.name, subscribers.c.attributes, subscribers.c.created_at)
            )
        }
        joined = connection.execute(sa.select(memberships.c.changed_at)).scalars().all()
    alone, bulk = found["alone@example.org"], found["bulk@example.org"]
    assert bulk.name == "Bulk Zoë" and bulk.attributes == {"language": "fr"} == alone.attributes
    assert type(bulk.created_at) is type(alone.created_at) and bulk.created_at.tzinfo == alone.created_at.tzinfo
    assert len(joined) == 2 and all(type(when) is type(joined[0]) for when in joined)
