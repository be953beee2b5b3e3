"""One copy per person, whatever the lists: someone on 'staff' and 'partners' gets an issue once.

Real aiosmtpd relays and real databases (SQLite and PostgreSQL): the library functions, concurrent
senders (threads and `mailer send` processes), the upgrade of a ledger that already holds
duplicates, and the CLI's `--list staff --list partners`.
"""

from __future__ import annotations

import asyncio
import email
import re
import subprocess
import threading
from collections import Counter
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import Result
from sqlalchemy.engine import Engine

from mailer.audience.database import deliveries, lists, open_database
from mailer.audience.lists import (
    add_subscriber,
    create_list,
    find_subscriber_id,
    list_id,
    unsubscribe,
    unsubscribe_from_list,
)
from mailer.delivery.delivery_status import delivery_status
from mailer.delivery.ledger import Ledger
from mailer.delivery.send import SendSummary, dry_run, send_to_list
from mailer.delivery.unsubscribe import read_token
from mailer.settings import Settings
from tests.cli_helpers import run_cli, start_mailer
from tests.conftest import ISSUES, SECRET, fail_process, send_environment
from tests.smtp_server import SMTPServer

ISSUE = ISSUES / "2016-02.yaml"
STAFF = ["ana@example.org", "bob@example.org", "cem@example.org"]
PARTNERS = ["bob@example.org", "cem@example.org", "dan@example.org"]


@pytest.fixture
def two_lists(send_settings: Settings) -> Engine:
    """'staff' (ana, bob, cem) and 'partners' (bob, cem, dan): bob and cem are on both."""
    engine = open_database(send_settings.database_url)
    for name, people in (("staff", STAFF), ("partners", PARTNERS)):
        create_list(engine, name)
        for address in people:
            add_subscriber(engine, name, address)
    return engine


def send(
    engine: Engine, settings: Settings, list_name: str, *, allow_duplicates: bool = False, retry_failed: bool = False
) -> SendSummary:
    return asyncio.run(
        send_to_list(engine, settings, ISSUE, list_name, allow_duplicates=allow_duplicates, retry_failed=retry_failed)
    )


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def lists_by_recipient(smtp_server: SMTPServer) -> dict[str, list[str]]:
    """Each recipient's messages, by the list they came through (List-Id)."""
    found: dict[str, list[str]] = {}
    for item in smtp_server.recorder.messages:
        [recipient] = item.recipients
        found.setdefault(recipient, []).append(str(parse(item.data)["List-Id"]).split()[0])
    return found


def rows(engine: Engine, issue: str = "2016-02") -> dict[tuple[str, str], tuple[str, str, bool]]:
    """(list, email) -> (status, reply, allowed duplicate), for every ledger row of the issue."""
    query = (
        sa.select(
            lists.c.name, deliveries.c.email, deliveries.c.status, deliveries.c.reply, deliveries.c.allow_duplicate
        )
        .select_from(deliveries.join(lists))
        .where(deliveries.c.issue == issue)
    )
    with engine.connect() as conn:
        return {(r.name, r.email): (r.status, r.reply, bool(r.allow_duplicate)) for r in conn.execute(query)}


def copies(engine: Engine) -> Counter[tuple[str, int]]:
    """How many rows that are not skipped each (issue, person) has: the copies the ledger sends or has sent."""
    query = sa.select(deliveries.c.issue, deliveries.c.subscriber_id).where(deliveries.c.status != "skipped")
    with engine.connect() as conn:
        return Counter((r.issue, r.subscriber_id) for r in conn.execute(query))


# --- sending to a second list skips who the first one covered -----------------------------------


def test_a_person_on_two_lists_gets_one_copy_through_the_list_sent_first(
    two_lists: Engine, send_settings: Settings, smtp_server: SMTPServer
) -> None:
    staff = send(two_lists, send_settings, "staff")
    assert (staff.sent, staff.skipped, staff.duplicates) == (3, 0, 0)
    partners = send(two_lists, send_settings, "partners")
    assert (partners.sent, partners.skipped, partners.duplicates) == (1, 0, 2)
    assert partners.complete
    assert re.fullmatch(
        r"2016-02 to 'partners': 1 sent, 0 failed \(0 permanent\), 0 skipped \(unsubscribed or suppressed\), "
        r"2 skipped \(they get it through another list\) in [\d.]+ s \(\d+/s\)",
        partners.line(),
    )
    assert lists_by_recipient(smtp_server) == {
        "ana@example.org": ["staff"],
        "bob@example.org": ["staff"],
        "cem@example.org": ["staff"],
        "dan@example.org": ["partners"],
    }
    assert rows(two_lists)[("partners", "bob@example.org")] == ("skipped", "gets it through 'staff'", False)
    assert delivery_status(two_lists, "2016-02", "partners").lines() == [
        "2016-02 to 'partners': 1 sent, 0 pending, 0 failed, 2 skipped",
        "  2 skipped: they get it through 'staff'",
    ]
    assert delivery_status(two_lists, "2016-02", "staff").lines() == [
        "2016-02 to 'staff': 3 sent, 0 pending, 0 failed, 0 skipped"
    ]
    again = send(two_lists, send_settings, "partners")
    assert (again.sent, again.skipped, again.duplicates, again.complete) == (0, 0, 0, True)
    assert len(smtp_server.recorder.messages) == 4


def test_covered_and_unsubscribed_are_counted_apart(
    two_lists: Engine, send_settings: Settings, smtp_server: SMTPServer
) -> None:
    add_subscriber(two_lists, "partners", "eve@example.org")
    send(two_lists, send_settings, "staff")
    stopped = asyncio.Event()
    stopped.set()
    interrupted = asyncio.run(send_to_list(two_lists, send_settings, ISSUE, "partners", stop=stopped))
    assert (interrupted.sent, interrupted.duplicates) == (0, 2)
    unsubscribe(two_lists, "eve@example.org")
    partners = send(two_lists, send_settings, "partners")
    assert (partners.sent, partners.skipped, partners.duplicates, partners.complete) == (1, 1, 0, True)
    assert rows(two_lists)[("partners", "eve@example.org")] == ("skipped", "unsubscribed or suppressed", False)
    assert delivery_status(two_lists, "2016-02", "partners").lines() == [
        "2016-02 to 'partners': 1 sent, 0 pending, 0 failed, 3 skipped",
        "  2 skipped: they get it through 'staff'",
    ]
    assert "eve@example.org" not in smtp_server.recorder.delivered()


def test_the_copy_carries_the_unsubscribe_link_of_the_list_it_came_through(
    two_lists: Engine, send_settings: Settings, smtp_server: SMTPServer
) -> None:
    send(two_lists, send_settings, "partners")
    send(two_lists, send_settings, "staff")
    bob = find_subscriber_id(two_lists, "bob@example.org")
    [message] = [parse(m.data) for m in smtp_server.recorder.messages if m.recipients == ["bob@example.org"]]
    token = re.search(r"/unsubscribe/([^>\s]+)>", str(message["List-Unsubscribe"]))
    assert token is not None
    assert read_token(SECRET, token.group(1))[:2] == (bob, list_id(two_lists, "partners"))
    assert rows(two_lists)[("staff", "bob@example.org")][:2] == ("skipped", "gets it through 'partners'")


def test_a_row_that_still_waits_or_failed_on_the_other_list_covers_too(
    two_lists: Engine, send_settings: Settings, smtp_server: SMTPServer
) -> None:
    """ "Already sent" includes being sent: a staff send interrupted before bob, or failed for him, still holds his copy."""
    add_subscriber(two_lists, "staff", "temp-1@example.org")
    add_subscriber(two_lists, "partners", "temp-1@example.org")
    stopped = asyncio.Event()
    stopped.set()
    interrupted = asyncio.run(send_to_list(two_lists, send_settings, ISSUE, "staff", stop=stopped))
    assert interrupted.interrupted and interrupted.sent == 0
    partners = send(two_lists, send_settings, "partners")
    assert (partners.sent, partners.duplicates) == (1, 3)
    staff = send(two_lists, send_settings.model_copy(update={"max_attempts": 1}), "staff")
    assert (staff.sent, staff.failed_temporary) == (3, 1)  # temp-1 answered 451 once
    assert send(two_lists, send_settings, "partners").sent == 0  # staff's failed row still holds temp-1's copy
    assert send(two_lists, send_settings, "staff", retry_failed=True).sent == 1
    assert smtp_server.recorder.delivered() == dict.fromkeys([*STAFF, "dan@example.org", "temp-1@example.org"], 1)


# --- someone who leaves the covering list gets it through the other -------------------------------


def test_leaving_the_covering_list_brings_the_issue_through_the_other_list_on_its_next_run(
    two_lists: Engine, send_settings: Settings, smtp_server: SMTPServer
) -> None:
    stopped = asyncio.Event()
    stopped.set()
    asyncio.run(send_to_list(two_lists, send_settings, ISSUE, "staff", stop=stopped))  # interrupted: all pending
    assert send(two_lists, send_settings, "partners").duplicates == 2
    bob = find_subscriber_id(two_lists, "bob@example.org")
    assert bob is not None
    assert unsubscribe_from_list(two_lists, bob, list_id(two_lists, "staff"))  # his unsubscribe link from staff
    staff = send(two_lists, send_settings, "staff")
    assert (staff.sent, staff.skipped) == (2, 1)
    partners = send(two_lists, send_settings, "partners")
    assert partners.sent == 1 and partners.complete
    assert lists_by_recipient(smtp_server) == {
        "ana@example.org": ["staff"],
        "bob@example.org": ["partners"],
        "cem@example.org": ["staff"],
        "dan@example.org": ["partners"],
    }
    assert delivery_status(two_lists, "2016-02", "partners").lines() == [
        "2016-02 to 'partners': 2 sent, 0 pending, 0 failed, 1 skipped",
        "  1 skipped: they get it through 'staff'",
    ]


def test_a_revival_that_collides_with_another_senders_revival_waits_for_the_next_run(
    two_lists: Engine, send_settings: Settings
) -> None:
    """Two lists may revive the same person at once: the database lets one through, the other stays covered.

    On PostgreSQL the second update waits for the first and then breaks the one-copy index; the send goes on.
    """
    create_list(two_lists, "news")
    add_subscriber(two_lists, "news", "bob@example.org")
    stopped = asyncio.Event()
    stopped.set()
    asyncio.run(send_to_list(two_lists, send_settings, ISSUE, "staff", stop=stopped))  # interrupted: all pending
    for name in ("partners", "news"):
        ledger = Ledger(two_lists, "2016-02", name)
        try:
            assert ledger.prepare().covered >= 1
        finally:
            ledger.close()
    bob = find_subscriber_id(two_lists, "bob@example.org")
    with two_lists.begin() as conn:  # bob left staff and staff's send skipped him: partners and news may revive him
        conn.execute(
            sa.update(deliveries)
            .where(deliveries.c.subscriber_id == bob, deliveries.c.list_id == list_id(two_lists, "staff"))
            .values(status="skipped", reply="unsubscribed or suppressed")
        )
    news_sender = two_lists.connect()
    transaction = news_sender.begin()
    news_sender.execute(  # news revives bob and has not committed yet
        sa.update(deliveries)
        .where(deliveries.c.subscriber_id == bob, deliveries.c.list_id == list_id(two_lists, "news"))
        .values(status="pending", covered_by=None, reply="")
    )
    ledger = Ledger(two_lists, "2016-02", "partners")
    prepared = []
    partners = threading.Thread(target=lambda: prepared.append(ledger.prepare()), daemon=True)
    try:
        partners.start()
        partners.join(timeout=1)
        transaction.commit()
        partners.join(timeout=30)
        assert not partners.is_alive()
    finally:
        news_sender.close()
        ledger.close()
    assert prepared and prepared[0].revived == 0
    assert rows(two_lists)[("partners", "bob@example.org")][:2] == ("skipped", "gets it through 'staff'")
    assert rows(two_lists)[("news", "bob@example.org")][0] == "pending"
    assert max(copies(two_lists).values()) == 1


# --- the database, not a check, keeps concurrent senders to one copy -------------------------------


def test_a_sender_that_cannot_yet_see_another_senders_rows_adds_no_second_copy(two_lists: Engine) -> None:
    """A check-then-insert would not see the uncommitted staff row and would add bob to partners as well."""
    bob = find_subscriber_id(two_lists, "bob@example.org")
    other_sender = two_lists.connect()
    transaction = other_sender.begin()
    other_sender.execute(
        sa.insert(deliveries).values(
            issue="2016-02",
            list_id=list_id(two_lists, "staff"),
            subscriber_id=bob,
            email="bob@example.org",
            status="pending",
            updated_at=sa.func.current_timestamp(),
        )
    )
    ledger = Ledger(two_lists, "2016-02", "partners")
    prepared = []
    partners = threading.Thread(target=lambda: prepared.append(ledger.prepare()), daemon=True)
    try:
        partners.start()
        partners.join(timeout=1)
        assert partners.is_alive(), "the partners sender should wait for the staff sender's rows"
        transaction.commit()
        partners.join(timeout=30)
        assert not partners.is_alive()
    finally:
        other_sender.close()
        ledger.close()
    assert (prepared[0].added, prepared[0].covered) == (2, 1)
    assert rows(two_lists)[("partners", "bob@example.org")][:2] == ("skipped", "gets it through 'staff'")
    assert max(copies(two_lists).values()) == 1


def _prepare_at_once(engine: Engine, issue: str, list_names: tuple[str, str]) -> None:
    """Two senders, each with its ledger open, prepare the same issue for their lists at the same instant."""
    start = threading.Barrier(len(list_names))
    errors: list[BaseException] = []

    def prepare(list_name: str) -> None:
        ledger = Ledger(engine, issue, list_name)
        try:
            start.wait(timeout=10)
            ledger.prepare()
        except BaseException as error:  # reported below, with the issue it happened on
            errors.append(error)
        finally:
            ledger.close()

    senders = [threading.Thread(target=prepare, args=(name,)) for name in list_names]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(timeout=60)
    assert not errors, f"{issue}: {errors!r}"


def test_two_senders_preparing_at_the_same_instant_leave_one_copy_each(two_lists: Engine) -> None:
    for i in range(150):
        for name in ("staff", "partners"):
            add_subscriber(two_lists, name, f"p{i:03d}@example.org")
    for month in range(1, 13):
        _prepare_at_once(two_lists, f"2016-{month:02d}", ("staff", "partners"))
    per_person = copies(two_lists)
    assert len(per_person) == 12 * 154 and set(per_person.values()) == {1}
    with two_lists.connect() as conn:
        covered = conn.execute(
            sa.select(sa.func.count()).where(deliveries.c.status == "skipped", deliveries.c.covered_by.is_not(None))
        ).scalar_one()
    assert covered == 12 * 152  # everyone on both lists: one copy, one covered row


def test_two_concurrent_sends_to_overlapping_lists_mail_each_person_once(
    two_lists: Engine, send_settings: Settings, smtp_server: SMTPServer
) -> None:
    for i in range(40):
        add_subscriber(two_lists, "staff", f"p{i:03d}@example.org")
        add_subscriber(two_lists, "partners", f"p{i:03d}@example.org")
    smtp_server.recorder.delay = 0.02

    async def both() -> tuple[SendSummary, SendSummary]:
        return await asyncio.gather(
            send_to_list(two_lists, send_settings, ISSUE, "staff"),
            send_to_list(two_lists, send_settings, ISSUE, "partners"),
        )

    staff, partners = asyncio.run(both())
    assert smtp_server.recorder.delivered() == dict.fromkeys(
        {*STAFF, *PARTNERS, *(f"p{i:03d}@example.org" for i in range(40))}, 1
    )
    assert staff.sent + partners.sent == 44 and staff.duplicates + partners.duplicates == 42
    assert staff.complete and partners.complete


def test_two_mailer_send_processes_on_overlapping_lists_mail_each_person_once(
    workdir: Path, two_lists: Engine, send_settings: Settings, smtp_server: SMTPServer
) -> None:
    overlap = [f"p{i:03d}@example.org" for i in range(200)]
    for address in overlap:
        add_subscriber(two_lists, "staff", address)
        add_subscriber(two_lists, "partners", address)
    smtp_server.recorder.delay = 0.01
    env = send_environment(send_settings, smtp_server)
    processes = [
        start_mailer(
            "send",
            "issues/2016-02.yaml",
            "--list",
            name,
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for name in ("staff", "partners")
    ]
    outputs = []
    for process in processes:
        try:
            out, err = process.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            fail_process(process, "a sender still running after 90 s")
        assert process.returncode == 0, out + err
        outputs.append(out)
    assert smtp_server.recorder.delivered() == dict.fromkeys({*STAFF, *PARTNERS, *overlap}, 1)
    sent = [int(re.search(r": (\d+) sent", out).group(1)) for out in outputs]  # type: ignore[union-attr]
    assert sum(sent) == 204
    assert max(copies(two_lists).values()) == 1


# --- allow_duplicates ------------------------------------------------------------------------------


def test_allow_duplicates_mails_everyone_on_the_list_and_later_sends_still_skip(
    two_lists: Engine, send_settings: Settings, smtp_server: SMTPServer
) -> None:
    send(two_lists, send_settings, "staff")
    assert send(two_lists, send_settings, "partners").duplicates == 2
    again = send(two_lists, send_settings, "partners", allow_duplicates=True)  # revives the covered rows
    assert (again.sent, again.duplicates) == (2, 0)
    assert lists_by_recipient(smtp_server)["bob@example.org"] == ["staff", "partners"]
    assert rows(two_lists)[("partners", "bob@example.org")] == ("sent", "250 2.0.0 queued", True)
    assert rows(two_lists)[("partners", "dan@example.org")][2] is False  # the only copy: not a duplicate
    create_list(two_lists, "news")
    add_subscriber(two_lists, "news", "bob@example.org")
    news = send(two_lists, send_settings, "news")
    assert (news.sent, news.duplicates) == (0, 1)
    assert smtp_server.recorder.delivered() == {
        "ana@example.org": 1,
        "bob@example.org": 2,
        "cem@example.org": 2,
        "dan@example.org": 1,
    }


def test_allow_duplicates_on_a_first_send_adds_rows_for_everyone(
    two_lists: Engine, send_settings: Settings, smtp_server: SMTPServer
) -> None:
    send(two_lists, send_settings, "staff")
    partners = send(two_lists, send_settings, "partners", allow_duplicates=True)
    assert (partners.sent, partners.duplicates) == (3, 0)
    assert delivery_status(two_lists, "2016-02", "partners").lines() == [
        "2016-02 to 'partners': 3 sent, 0 pending, 0 failed, 0 skipped"
    ]
    assert smtp_server.recorder.delivered()["cem@example.org"] == 2


# --- the dry run -----------------------------------------------------------------------------------


def written(folder: Path) -> dict[str, str]:
    """The dry run's files: recipient -> the list it goes through (List-Id)."""
    found = {}
    for path in folder.iterdir():
        message = parse(path.read_bytes())
        found[message["To"].addresses[0].addr_spec] = str(message["List-Id"]).split()[0]
    assert len(found) == len(list(folder.iterdir())), "one file per person"
    return found


def test_a_dry_run_writes_one_message_per_person_across_the_lists(
    two_lists: Engine, send_settings: Settings, tmp_path: Path
) -> None:
    count = asyncio.run(dry_run(two_lists, send_settings, ISSUE, ["staff", "partners"], tmp_path / "both"))
    assert count == 4
    assert written(tmp_path / "both") == {
        "ana@example.org": "staff",
        "bob@example.org": "staff",
        "cem@example.org": "staff",
        "dan@example.org": "partners",
    }
    assert rows(two_lists) == {}


def test_a_dry_run_leaves_out_who_the_ledger_shows_got_it_through_another_list(
    two_lists: Engine, send_settings: Settings, smtp_server: SMTPServer, tmp_path: Path
) -> None:
    send(two_lists, send_settings, "partners")
    count = asyncio.run(dry_run(two_lists, send_settings, ISSUE, ["staff"], tmp_path / "staff"))
    assert count == 1 and written(tmp_path / "staff") == {"ana@example.org": "staff"}
    count = asyncio.run(dry_run(two_lists, send_settings, ISSUE, ["staff"], tmp_path / "again", allow_duplicates=True))
    assert count == 3 and set(written(tmp_path / "again")) == set(STAFF)


# --- upgrading a ledger written under the old rules -------------------------------------------------


def _migrate_to(database_url: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    from mailer.audience.database import MIGRATIONS

    old = sa.create_engine(database_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with old.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    old.dispose()


def test_a_database_holding_duplicates_is_upgraded_to_one_copy_per_person(
    database_url: str, send_settings: Settings, smtp_server: SMTPServer
) -> None:
    _migrate_to(database_url, "0005")
    old = sa.create_engine(database_url)
    old_rows = sa.table(  # deliveries as migration 0005 left it
        "deliveries",
        *(sa.column(name) for name in ("issue", "list_id", "subscriber_id", "email", "status", "reply", "updated_at")),
    )
    create_list(old, "staff")
    create_list(old, "partners")
    create_list(old, "news")
    for address in ("ana@example.org", "bob@example.org", "cem@example.org", "dan@example.org"):
        add_subscriber(old, "staff", address)
        add_subscriber(old, "partners", address)
    staff, partners = list_id(old, "staff"), list_id(old, "partners")
    people = {
        address: find_subscriber_id(old, address)
        for address in ("ana@example.org", "bob@example.org", "cem@example.org", "dan@example.org")
    }
    written_rows = [  # the old rules: each list had its own row for everyone, in this order
        ("2016-02", staff, "ana@example.org", "sent"),
        ("2016-02", staff, "bob@example.org", "sent"),
        ("2016-02", staff, "cem@example.org", "sent"),
        ("2016-02", staff, "dan@example.org", "failed"),
        ("2016-02", partners, "ana@example.org", "skipped"),
        ("2016-02", partners, "bob@example.org", "sent"),
        ("2016-02", partners, "cem@example.org", "pending"),
        ("2016-02", partners, "dan@example.org", "sent"),
    ]
    with old.begin() as conn:
        for issue, lid, address, status in written_rows:
            conn.execute(
                sa.insert(old_rows).values(
                    issue=issue,
                    list_id=lid,
                    subscriber_id=people[address],
                    email=address,
                    status=status,
                    reply="",
                    updated_at=sa.func.current_timestamp(),
                )
            )
    old.dispose()

    engine = open_database(database_url)
    try:
        assert rows(engine) == {
            ("staff", "ana@example.org"): ("sent", "", False),
            ("staff", "bob@example.org"): ("sent", "", False),
            ("staff", "cem@example.org"): ("sent", "", False),
            ("staff", "dan@example.org"): ("skipped", "gets it through 'partners'", False),
            ("partners", "ana@example.org"): ("skipped", "", False),
            ("partners", "bob@example.org"): ("sent", "", True),  # went out twice under the old rules
            ("partners", "cem@example.org"): ("skipped", "gets it through 'staff'", False),
            ("partners", "dan@example.org"): ("sent", "", False),
        }
        assert copies(engine) == {("2016-02", people[a]): 2 if a == "bob@example.org" else 1 for a in people}
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:  # a third list may not add ana's second copy
            conn.execute(
                sa.insert(deliveries).values(
                    issue="2016-02",
                    list_id=list_id(engine, "news"),
                    subscriber_id=people["ana@example.org"],
                    email="ana@example.org",
                    status="pending",
                    updated_at=sa.func.current_timestamp(),
                )
            )
        summary = asyncio.run(send_to_list(engine, send_settings, ISSUE, "partners"))
        assert summary.sent == 0 and summary.complete  # cem's unsent second copy is not sent
        assert smtp_server.recorder.delivered() == {}
        assert delivery_status(engine, "2016-02", "partners").lines() == [
            "2016-02 to 'partners': 2 sent, 0 pending, 0 failed, 2 skipped",
            "  1 skipped: they get it through 'staff'",
        ]
    finally:
        engine.dispose()


# --- the CLI: mailer send ISSUE --list staff --list partners ---------------------------------------


def mailer(workdir: Path, env: dict[str, str], *args: str) -> Result:
    return run_cli(*args, cwd=workdir, env=env)


def test_cli_sends_to_two_lists_one_copy_each_and_says_who_was_covered(
    workdir: Path, two_lists: Engine, send_settings: Settings, smtp_server: SMTPServer
) -> None:
    env = send_environment(send_settings, smtp_server)
    result = mailer(workdir, env, "send", "issues/2016-02.yaml", "--list", "staff", "--list", "partners")
    assert result.exit_code == 0, result.stdout + result.stderr
    staff, partners = result.stdout.splitlines()
    assert re.fullmatch(
        r"2016-02 to 'staff': 3 sent, 0 failed \(0 permanent\), 0 skipped \(unsubscribed or suppressed\) "
        r"in [\d.]+ s \(\d+/s\)",
        staff,
    )
    assert re.fullmatch(
        r"2016-02 to 'partners': 1 sent, 0 failed \(0 permanent\), 0 skipped \(unsubscribed or suppressed\), "
        r"2 skipped \(they get it through another list\) in [\d.]+ s \(\d+/s\)",
        partners,
    )
    assert smtp_server.recorder.delivered() == dict.fromkeys({*STAFF, *PARTNERS}, 1)
    status = mailer(workdir, env, "status", "issues/2016-02.yaml")
    assert status.stdout == (
        "2016-02 to 'partners': 1 sent, 0 pending, 0 failed, 2 skipped\n"
        "  2 skipped: they get it through 'staff'\n"
        "2016-02 to 'staff': 3 sent, 0 pending, 0 failed, 0 skipped\n"
    )
    again = mailer(workdir, env, "send", "issues/2016-02.yaml", "--list", "partners", "--list", "staff")
    assert again.exit_code == 0 and len(smtp_server.recorder.messages) == 4


def test_cli_allow_duplicates_sends_to_everyone_on_each_list(
    workdir: Path, two_lists: Engine, send_settings: Settings, smtp_server: SMTPServer
) -> None:
    env = send_environment(send_settings, smtp_server)
    assert mailer(workdir, env, "send", "issues/2016-02.yaml", "--list", "staff").exit_code == 0
    result = mailer(workdir, env, "send", "issues/2016-02.yaml", "--list", "partners", "--allow-duplicates")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert result.stdout.startswith("2016-02 to 'partners': 3 sent, 0 failed")
    assert "they get it through another list" not in result.stdout
    assert smtp_server.recorder.delivered() == {
        "ana@example.org": 1,
        "bob@example.org": 2,
        "cem@example.org": 2,
        "dan@example.org": 1,
    }


def test_cli_dry_run_to_two_lists_writes_one_message_per_person(
    workdir: Path, two_lists: Engine, send_settings: Settings, smtp_server: SMTPServer
) -> None:
    env = send_environment(send_settings, smtp_server)
    args = ("send", "issues/2016-02.yaml", "--list", "staff", "--list", "partners", "--dry-run", "-o", "out")
    result = mailer(workdir, env, *args)
    assert (result.exit_code, result.stdout) == (0, "dry run: wrote 4 messages to out/; nothing was sent\n")
    assert set(written(workdir / "out")) == {*STAFF, *PARTNERS}
    assert smtp_server.recorder.attempts == {}
