"""What a list owner does by hand: list and look up subscribers, lift a suppression, delete and rename lists.

On a real SQLite file and the local PostgreSQL, through the CLI as a user types it where the words matter.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import Result
from sqlalchemy.engine import Engine

from mailer.audience.database import deliveries, delivery_events, memberships, subscribers, suppressions
from mailer.audience.list_admin import delete_list, list_contents, rename_list
from mailer.audience.lists import (
    add_subscriber,
    create_list,
    find_subscriber_id,
    list_id,
    list_summaries,
    mailable_subscribers,
    unsubscribe,
)
from mailer.audience.resubscribe import resubscribe
from mailer.audience.subscriber_admin import ListedSubscriber, subscriber_listing
from mailer.delivery.send import send_to_list
from mailer.delivery.sent_issues import sent_to_list, went_out
from mailer.errors import MailerError
from mailer.settings import Settings
from tests.cli_helpers import run_cli
from tests.conftest import ISSUES, ROOT, fail_process
from tests.smtp_server import SMTPServer

Run = Callable[..., Result]
STAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC")


@pytest.fixture
def staff(engine: Engine) -> Engine:
    create_list(engine, "staff", "All staff")
    create_list(engine, "press", "Journalists")
    add_subscriber(engine, "staff", "ana@example.org", name="Ana Alves", attributes={"language": "pt"})
    add_subscriber(engine, "staff", "bob_x@example.org", name="Bob 100%")
    add_subscriber(engine, "staff", "bobyx@example.org", name="Bob 1000")
    add_subscriber(engine, "staff", "ÉLODIE@example.org", name="Élodie Ñúñez")
    add_subscriber(engine, "press", "ana@example.org")
    unsubscribe(engine, "bob_x@example.org", reason="bounced", note="5.1.1 user unknown")
    return engine


@pytest.fixture
def run(tmp_path: Path, database_url: str) -> Run:
    shutil.copy(ROOT / "mailer.toml", tmp_path / "mailer.toml")

    def mailer(*args: str) -> Result:
        return run_cli(*args, cwd=tmp_path, env={"MAILER_DATABASE_URL": database_url})

    return mailer


def listed(engine: Engine, list_name: str = "staff", **options: Any) -> list[ListedSubscriber]:
    return list(subscriber_listing(engine, list_name, **options).rows)


def without_times(text: str) -> str:
    return STAMP.sub("TIME", text)


# --- subscribers list ---------------------------------------------------------------------------------


def test_subscribers_list_shows_everyone_on_the_list_with_status_and_suppression(staff: Engine, run: Run) -> None:
    result = run("subscribers", "list", "staff")
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == (
        "EMAIL               NAME          STATUS        SUPPRESSED\n"
        "ana@example.org     Ana Alves     subscribed\n"
        "bob_x@example.org   Bob 100%      unsubscribed  bounced\n"
        "bobyx@example.org   Bob 1000      subscribed\n"
        "ÉLODIE@example.org  Élodie Ñúñez  subscribed\n"
    )
    suppressed = run("subscribers", "list", "staff", "--suppressed")
    assert suppressed.stdout.splitlines()[1:] == ["bob_x@example.org  Bob 100%  unsubscribed  bounced"]
    assert run("subscribers", "list", "press", "--suppressed").stdout == "no suppressed subscribers on 'press'\n"
    assert run("subscribers", "list", "staff", "--search", "nobody").stdout == (
        "no subscribers on 'staff' match 'nobody'\n"
    )


def test_an_unknown_list_is_one_line_naming_it(staff: Engine, run: Run) -> None:
    result = run("subscribers", "list", "stafff")
    assert (result.exit_code, result.stdout, result.stderr) == (1, "", "unknown list 'stafff'; did you mean 'staff'?\n")


@pytest.mark.parametrize(
    ("search", "found"),
    [
        ("ANA", ["ana@example.org"]),
        ("alves", ["ana@example.org"]),
        ("élodie", ["ÉLODIE@example.org"]),  # outside ASCII too, on SQLite as on PostgreSQL
        ("ñÚÑEZ", ["ÉLODIE@example.org"]),
        ("bob_x", ["bob_x@example.org"]),  # _ is a letter here, not LIKE's any-character
        ("_", ["bob_x@example.org"]),
        ("100%", ["bob_x@example.org"]),  # % too: "Bob 1000" does not match
        ("%", ["bob_x@example.org"]),
        ("/", []),  # the escape character itself
        ("EXAMPLE.ORG", ["ana@example.org", "bob_x@example.org", "bobyx@example.org", "ÉLODIE@example.org"]),
    ],
)
def test_search_matches_address_or_name_in_any_case_and_wildcards_literally(
    staff: Engine, search: str, found: list[str]
) -> None:
    assert [row.email for row in listed(staff, search=search)] == found


def test_suppressed_only_and_search_together(staff: Engine) -> None:
    unsubscribe(staff, "ana@example.org", reason="complaint")
    assert [(r.email, r.status, r.suppression) for r in listed(staff, suppressed_only=True)] == [
        ("ana@example.org", "unsubscribed", "complaint"),
        ("bob_x@example.org", "unsubscribed", "bounced"),
    ]
    assert [r.email for r in listed(staff, suppressed_only=True, search="bob")] == ["bob_x@example.org"]
    assert listed(staff, "press", suppressed_only=True)[0].email == "ana@example.org"


def _add_many(engine: Engine, list_name: str, count: int) -> None:
    """`count` subscribers on the list, made by the database itself (a recursive CTE): seconds, not minutes."""
    lid = list_id(engine, list_name)
    n = sa.select(sa.literal(1).label("i")).cte("n", recursive=True)
    n = n.union_all(sa.select(n.c.i + 1).where(n.c.i < count))
    number = sa.cast(n.c.i, sa.String)
    email = sa.literal("person") + number + sa.literal("@example.org")
    empty: sa.ColumnElement[Any] = sa.literal_column(
        "'{}'" if engine.dialect.name == "sqlite" else "CAST('{}' AS JSON)"
    )
    stamp = sa.literal(dt.datetime.now(dt.UTC), sa.DateTime(timezone=True))
    people = sa.select(email, email, sa.literal("Person ") + number, empty, stamp, stamp)
    with engine.begin() as conn:
        columns = ["email", "email_key", "name", "attributes", "created_at", "updated_at"]
        conn.execute(sa.insert(subscribers).from_select(columns, people))
        conn.execute(
            sa.insert(memberships).from_select(
                ["list_id", "subscriber_id", "status", "changed_at"],
                sa.select(sa.literal(lid), subscribers.c.id, sa.literal("subscribed"), stamp).where(
                    subscribers.c.email.like("person%")
                ),
            )
        )


def test_the_listing_streams_a_batch_at_a_time_never_the_whole_list(engine: Engine) -> None:
    """Had the rows been read into memory (a list, or a client-side cursor on PostgreSQL), this fails."""
    total, batch = 50_000, 500
    create_list(engine, "big")
    _add_many(engine, "big", total)
    cursors: list[Any] = []

    def seen(conn: object, cursor: Any, statement: str, *rest: object) -> None:
        if "ORDER BY subscribers.email_key" in statement:
            cursors.append(cursor)

    sa.event.listen(engine, "after_cursor_execute", seen)
    listing = subscriber_listing(engine, "big", batch=batch)
    assert listing.count == total
    lines = listing.lines()
    assert isinstance(lines, Iterator) and isinstance(listing.rows, Iterator)
    tracemalloc.start()
    try:
        assert next(lines).startswith("EMAIL")
        assert next(lines).startswith("person")
        if engine.dialect.name == "postgresql":
            [cursor] = cursors  # psycopg: a server-side cursor holds one batch, a client-side one all 50,000 rows
            assert cursor.pgresult.ntuples <= batch
        shown = 2 + sum(1 for _ in lines)
        streamed = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        everyone = list(subscriber_listing(engine, "big", batch=batch).rows)
        whole = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        lines.close()  # on a failure too: an open cursor would block dropping the test's schema
        sa.event.remove(engine, "after_cursor_execute", seen)
    assert (shown, len(everyone)) == (total + 1, total)
    assert streamed * 10 < whole, f"streaming peaked at {streamed:,} bytes, the whole list takes {whole:,}"


# --- subscribers show ---------------------------------------------------------------------------------


def _history(engine: Engine, address: str, count: int) -> None:
    """`count` ledger rows for the address on staff, issue-0 the oldest, and two delivery events."""
    sid = find_subscriber_id(engine, address)
    lid = list_id(engine, "staff")
    start = dt.datetime(2016, 1, 1, 9, 0, tzinfo=dt.UTC)
    with engine.begin() as conn:
        for i in range(count):
            when = start + dt.timedelta(days=i)
            status = "failed" if i == count - 1 else "sent"
            conn.execute(
                sa.insert(deliveries).values(
                    issue=f"issue-{i:02}",
                    list_id=lid,
                    subscriber_id=sid,
                    email=address,
                    status=status,
                    reply="550 5.1.1 no such user" if status == "failed" else "250 2.0.0 queued",
                    updated_at=when,
                    sent_at=when if status == "sent" else None,
                )
            )
        for kind, status, diagnostic, day in [
            ("soft", "4.2.2", "mailbox full", 3),
            ("hard", "5.1.1", "no such user", 11),
        ]:
            conn.execute(
                sa.insert(delivery_events).values(
                    subscriber_id=sid,
                    email=address,
                    issue=f"issue-{day:02}",
                    list_id=lid,
                    kind=kind,
                    status=status,
                    diagnostic=diagnostic,
                    source="<bounce@relay>",
                    created_at=start + dt.timedelta(days=day, hours=2),
                )
            )


def test_show_tells_one_address_whole_story(staff: Engine, run: Run) -> None:
    _history(staff, "bob_x@example.org", 12)
    result = run("subscribers", "show", "BOB_X@Example.org")
    assert (result.exit_code, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    assert [without_times(line) for line in lines[:8]] == [
        "bob_x@example.org",
        "  name:        Bob 100%",
        "  attributes:  -",
        "  created:     TIME",
        "  updated:     TIME",
        "  suppressed:  bounced since TIME (5.1.1 user unknown)",
        "lists:",
        "  staff  unsubscribed since TIME",
    ]
    assert lines[8:12] == [
        "deliveries (latest 10 of 12):",
        "  issue-11  staff  failed  2016-01-12 09:00 UTC  550 5.1.1 no such user",
        "  issue-10  staff  sent    2016-01-11 09:00 UTC  250 2.0.0 queued",
        "  issue-09  staff  sent    2016-01-10 09:00 UTC  250 2.0.0 queued",
    ]
    assert lines[18:] == [
        "  issue-02  staff  sent    2016-01-03 09:00 UTC  250 2.0.0 queued",
        "events:",
        "  hard  issue-11  5.1.1  2016-01-12 11:00 UTC  no such user",
        "  soft  issue-03  4.2.2  2016-01-04 11:00 UTC  mailbox full",
    ]

    ana = run("subscribers", "show", "ana@example.org").stdout.splitlines()
    assert ana[2] == "  attributes:  language=pt"
    assert [without_times(line) for line in ana[5:]] == [
        "  suppressed:  no",
        "lists:",
        "  press  subscribed since TIME",
        "  staff  subscribed since TIME",
        "deliveries: none",
        "events: none",
    ]


def test_show_an_address_only_the_suppression_list_knows_and_an_unknown_one(staff: Engine, run: Run) -> None:
    unsubscribe(staff, "never@example.org", reason="blocked", note="asked by phone")
    result = run("subscribers", "show", "never@example.org")
    assert [without_times(line) for line in result.stdout.splitlines()] == [
        "never@example.org",
        "  not a subscriber (on no list)",
        "  suppressed:  blocked since TIME (asked by phone)",
        "lists: none",
        "deliveries: none",
        "events: none",
    ]
    unknown = run("subscribers", "show", "nobody@example.org")
    assert (unknown.exit_code, unknown.stdout, unknown.stderr) == (
        1,
        "",
        "nobody@example.org: no such subscriber, and not suppressed\n",
    )


# --- resubscribe --------------------------------------------------------------------------------------


def _events(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [
            tuple(row)
            for row in conn.execute(
                sa.select(
                    delivery_events.c.email,
                    delivery_events.c.kind,
                    delivery_events.c.status,
                    delivery_events.c.diagnostic,
                    delivery_events.c.source,
                    delivery_events.c.list_id,
                    delivery_events.c.subscriber_id,
                ).order_by(delivery_events.c.id)
            )
        ]


def _suppressed(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(suppressions.c.email_key, suppressions.c.reason)).all())


def test_resubscribe_lifts_the_suppression_and_logs_it(staff: Engine, run: Run) -> None:
    result = run("resubscribe", "BOB_X@example.org")
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == (
        "bob_x@example.org: suppression lifted (was bounced); still unsubscribed from 'staff' "
        "(--list NAME subscribes again)\n"
    )
    assert "bob_x@example.org" not in _suppressed(staff)
    sid = find_subscriber_id(staff, "bob_x@example.org")
    assert _events(staff) == [("bob_x@example.org", "resubscribe", "bounced", "lifted by hand", "cli", None, sid)]
    assert "bob_x@example.org" not in [s.email for s in mailable_subscribers(staff, "staff")]  # still unsubscribed

    again = run("resubscribe", "bob_x@example.org")
    assert (again.exit_code, again.stderr) == (
        1,
        "bob_x@example.org: not suppressed; nothing to lift (--list NAME subscribes it to a list again)\n",
    )
    back = run("resubscribe", "bob_x@example.org", "--list", "staff")
    assert (back.exit_code, back.stdout) == (0, "bob_x@example.org: not suppressed; subscribed again to 'staff'\n")
    assert "bob_x@example.org" in [s.email for s in mailable_subscribers(staff, "staff")]
    assert len(_events(staff)) == 1  # nothing was lifted the second time


def test_resubscribe_to_a_list_in_one_go_with_a_reason(staff: Engine, run: Run) -> None:
    result = run("resubscribe", "bob_x@example.org", "--list", "press", "--reason", "mailbox\nfixed, he wrote")
    assert result.stdout == (
        "bob_x@example.org: suppression lifted (was bounced); subscribed again to 'press'; "
        "still unsubscribed from 'staff' (--list NAME subscribes again)\n"
    )
    [event] = _events(staff)
    assert event[2:6] == ("bounced", "mailbox fixed, he wrote", "cli", list_id(staff, "press"))
    assert [s.email for s in mailable_subscribers(staff, "press")] == ["ana@example.org", "bob_x@example.org"]


def test_a_complaint_is_lifted_only_with_force(staff: Engine, run: Run) -> None:
    unsubscribe(staff, "ana@example.org", reason="complaint")
    refused = run("resubscribe", "ana@example.org", "--list", "staff")
    assert refused.exit_code == 1
    assert without_times(refused.stderr) == (
        "ana@example.org: suppressed since TIME because they reported a message as spam; "
        "lift it only if they asked for mail again, with --force\n"
    )
    assert _suppressed(staff)["ana@example.org"] == "complaint" and _events(staff) == []
    assert "ana@example.org" not in [s.email for s in mailable_subscribers(staff, "staff")]

    forced = run("resubscribe", "ana@example.org", "--list", "staff", "--force", "--reason", "asked in writing")
    assert forced.stdout == (
        "ana@example.org: suppression lifted (was complaint); subscribed again to 'staff'; "
        "still unsubscribed from 'press' (--list NAME subscribes again)\n"
    )
    assert [event[1:4] for event in _events(staff)] == [("resubscribe", "complaint", "asked in writing")]


def test_resubscribe_an_address_known_only_to_the_suppression_list(staff: Engine) -> None:
    unsubscribe(staff, "Later@Example.org", reason="blocked")
    with pytest.raises(
        MailerError, match="^nobody@example.org: not suppressed, and not a subscriber; nothing to lift$"
    ):
        resubscribe(staff, "nobody@example.org")
    with pytest.raises(MailerError, match="^unknown list 'stuff'; did you mean 'staff'"):
        resubscribe(staff, "later@example.org", list_name="stuff")
    assert "later@example.org" in _suppressed(staff)  # nothing changed

    done = resubscribe(staff, "later@example.org", list_name="staff")
    assert done.line() == "later@example.org: suppression lifted (was blocked); subscribed again to 'staff'"
    assert "later@example.org" in [s.email for s in mailable_subscribers(staff, "staff")]
    [event] = _events(staff)
    assert event[6] == find_subscriber_id(staff, "later@example.org")

    unsubscribe(staff, "gone@example.org")
    alone = resubscribe(staff, "gone@example.org")
    assert (
        alone.line()
        == "gone@example.org: suppression lifted (was unsubscribed); on no list (mailer subscribers add LIST EMAIL)"
    )
    assert _events(staff)[-1][6] is None and find_subscriber_id(staff, "gone@example.org") is None


# --- lists delete and rename --------------------------------------------------------------------------


def _sent_staff(engine: Engine, send_settings: Settings) -> None:
    asyncio.run(send_to_list(engine, send_settings, ISSUES / "2016-02.yaml", "staff"))


def test_delete_takes_the_memberships_and_leaves_people_suppressions_and_events(staff: Engine, run: Run) -> None:
    _history(staff, "ana@example.org", 0)  # two delivery events naming staff
    piped = run("lists", "delete", "staff")
    assert (piped.exit_code, piped.stderr) == (
        1,
        "not deleting list 'staff' without confirmation; run it at a terminal, or pass --yes\n",
    )
    assert list_contents(staff, "staff").question() == "Delete list 'staff' with 4 subscribers?"

    result = run("lists", "delete", "staff", "--yes")
    assert (result.exit_code, result.stdout) == (
        0,
        "deleted list 'staff' (4 memberships); subscribers, suppressions and events stay\n",
    )
    assert [s.name for s in list_summaries(staff)] == ["press"]
    assert find_subscriber_id(staff, "bobyx@example.org") is not None
    assert _suppressed(staff) == {"bob_x@example.org": "bounced"}
    assert [(event[1], event[5]) for event in _events(staff)] == [("soft", None), ("hard", None)]
    assert [without_times(line) for line in run("subscribers", "show", "ana@example.org").stdout.splitlines()[6:]] == [
        "lists:",
        "  press  subscribed since TIME",
        "deliveries: none",
        "events:",
        "  hard  issue-11  5.1.1  TIME  no such user",
        "  soft  issue-03  4.2.2  TIME  mailbox full",
    ]
    gone = run("lists", "delete", "staff", "--yes")
    assert (gone.exit_code, gone.stderr) == (1, "unknown list 'staff'; known lists: press\n")


def test_a_list_with_a_send_history_is_deleted_only_with_force(
    staff: Engine, send_settings: Settings, smtp_server: SMTPServer, run: Run
) -> None:
    _sent_staff(staff, send_settings)
    refused = run("lists", "delete", "staff", "--yes")
    assert (refused.exit_code, refused.stderr) == (
        1,
        "list 'staff' has the send history of 1 issue (2016-02); deleting the list deletes it, and its people could "
        "then get those issues again through another list: keep the list (mailer lists rename), "
        "or pass --force to delete it with its history\n",
    )
    with pytest.raises(MailerError, match="^list 'staff' has the send history of 1 issue"):
        delete_list(staff, "staff")
    assert sent_to_list(staff, "staff") == {"2016-02"}

    assert list_contents(staff, "staff", force=True).question() == (
        "Delete list 'staff' with 4 subscribers and the send history of 1 issue?"
    )
    forced = run("lists", "delete", "staff", "--yes", "--force")
    assert forced.stdout == (
        "deleted list 'staff' (4 memberships) and its send history (3 deliveries of 2016-02); "
        "subscribers, suppressions and events stay\n"
    )
    assert went_out(staff, ["2016-02"]) == set()


def _at_a_terminal(cwd: Path, database_url: str, answer: str, *args: str) -> tuple[int, str]:
    """`mailer ARGS` with a pty as stdin, so click.confirm asks; `answer` is typed into it."""
    import pty

    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "mailer", *args],
        cwd=cwd,
        env={**os.environ, "MAILER_DATABASE_URL": database_url},
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    os.close(terminal)
    try:
        os.write(controller, answer.encode() + b"\n")
        try:
            output, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            fail_process(process, f"mailer {' '.join(args)} at a terminal: still running after 60 s")
    finally:
        os.close(controller)
    return process.returncode, output


def test_delete_asks_at_a_terminal(staff: Engine, database_url: str, run: Run, tmp_path: Path) -> None:
    code, output = _at_a_terminal(tmp_path, database_url, "n", "lists", "delete", "press")
    assert (code, output) == (1, "Delete list 'press' with 1 subscriber? [y/N]: Aborted!\n")
    assert [s.name for s in list_summaries(staff)] == ["press", "staff"]
    code, output = _at_a_terminal(tmp_path, database_url, "y", "lists", "delete", "press")
    assert (code, output) == (
        0,
        "Delete list 'press' with 1 subscriber? [y/N]: "
        "deleted list 'press' (1 membership); subscribers, suppressions and events stay\n",
    )
    assert [s.name for s in list_summaries(staff)] == ["staff"]


def test_rename_keeps_the_list_its_history_following(
    staff: Engine, send_settings: Settings, smtp_server: SMTPServer, run: Run
) -> None:
    _sent_staff(staff, send_settings)
    lid = list_id(staff, "staff")
    result = run("lists", "rename", "staff", "all-staff")
    assert (result.exit_code, result.stdout) == (0, "renamed list 'staff' to 'all-staff'\n")
    assert list_id(staff, "all-staff") == lid
    assert sent_to_list(staff, "all-staff") == {"2016-02"}
    status = run("status", str(ISSUES / "2016-02.yaml"), "--list", "all-staff")
    assert status.stdout.splitlines()[0] == "2016-02 to 'all-staff': 3 sent, 0 pending, 0 failed, 0 skipped"

    taken = run("lists", "rename", "all-staff", "press")
    assert (taken.exit_code, taken.stderr) == (1, "list 'press' already exists\n")
    bad = run("lists", "rename", "all-staff", "All Staff")
    assert (bad.exit_code, bad.stderr) == (
        1,
        "list name 'All Staff': use lower-case letters, digits, - and _ (e.g. staff, press-2016)\n",
    )
    unknown = run("lists", "rename", "staff", "team")
    assert (unknown.exit_code, unknown.stderr) == (1, "unknown list 'staff'; did you mean 'all-staff'?\n")


def test_renaming_a_public_list_moves_its_subscribe_page(engine: Engine) -> None:
    create_list(engine, "news", public=True)
    assert rename_list(engine, "news", "monthly") is True
    assert [s.name for s in list_summaries(engine)] == ["monthly"]
