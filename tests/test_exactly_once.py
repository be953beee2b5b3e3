"""The ledger holds under every failure: crashes, lost replies, refusing or vanished relays, dead PostgreSQL senders.

Real servers throughout: aiosmtpd relays that fail on the server side (tests/fault_servers.py), real
`mailer send` processes killed with SIGKILL, PostgreSQL backends ended with pg_terminate_backend.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import Result
from sqlalchemy.engine import Engine

from mailer.audience.database import deliveries, open_database
from mailer.audience.lists import add_subscriber, create_list, remove_subscriber, unsubscribe
from mailer.delivery.delivery_status import delivery_status
from mailer.delivery.ledger import Ledger
from mailer.delivery.send import send_to_list
from mailer.settings import Settings, load_settings
from tests.cli_helpers import run_cli, start_mailer
from tests.conftest import ISSUES, ROOT, SECRET, fail_process, wait_until
from tests.fault_servers import FaultServer
from tests.smtp_server import free_port

ISSUE = ISSUES / "2016-02.yaml"
SEND = ("send", "issues/2016-02.yaml", "--list", "staff")


@pytest.fixture
def relay() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


def settings_for(port: int, database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_tls": "none",
        "sender": "ICMPD Newsletter <newsletter@icmpd.org>",
        "unsubscribe_secret": SECRET,
        "database_url": database_url,
        "retry_base_delay": 0.05,
        "smtp_pool_size": 4,
        "smtp_timeout": 5,
        **overrides,
    }
    return load_settings(ROOT / "mailer.toml", **values)


def environment(port: int, database_url: str, **extra: str) -> dict[str, str]:
    return {
        "MAILER_DATABASE_URL": database_url,
        "MAILER_SMTP_HOST": "127.0.0.1",
        "MAILER_SMTP_PORT": str(port),
        "MAILER_SMTP_TLS": "none",
        "MAILER_SENDER": "ICMPD Newsletter <newsletter@icmpd.org>",
        "MAILER_UNSUBSCRIBE_SECRET": SECRET,
        "MAILER_SMTP_POOL_SIZE": "4",
        "MAILER_RETRY_BASE_DELAY": "0.05",
        "MAILER_CLAIM_LEASE_SECONDS": "5",
        **extra,
    }


def mailer(workdir: Path, env: dict[str, str], *args: str) -> Result:
    return run_cli(*args, cwd=workdir, env=env)


def finish(process: subprocess.Popen[str], what: str, timeout: float = 60) -> tuple[str, str]:
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        fail_process(process, f"{what}: still running after {timeout:g} s")


def statuses(engine: Engine) -> dict[str, str]:
    with engine.connect() as connection:
        return {row.email: row.status for row in connection.execute(sa.select(deliveries.c.email, deliveries.c.status))}


def claimants(engine: Engine) -> set[str]:
    """The senders holding rows right now."""
    query = sa.select(deliveries.c.claimed_by).distinct().where(deliveries.c.status == "sending")
    with engine.connect() as connection:
        return set(connection.execute(query).scalars())


def flagged(engine: Engine) -> set[str]:
    """Rows marked "may have been delivered twice"."""
    query = sa.select(deliveries.c.email).where(deliveries.c.uncertain == sa.true())
    with engine.connect() as connection:
        return set(connection.execute(query).scalars())


@pytest.fixture
def staff(database_url: str) -> Engine:
    engine = open_database(database_url)
    create_list(engine, "staff", "All staff")
    return engine


# --- 1. suppression and membership are checked when rows are claimed -----------------------------


def test_unsubscribed_between_a_crash_and_the_resume_is_not_mailed(
    workdir: Path, staff: Engine, database_url: str, relay: FaultServer
) -> None:
    recipients = [f"p{i:03d}@example.org" for i in range(40)]
    for address in recipients:
        add_subscriber(staff, "staff", address)
    relay.recorder.delay = 0.1
    env = environment(relay.port, database_url)
    process = start_mailer(*SEND, cwd=workdir, env=env, stderr=subprocess.PIPE)
    wait_until(lambda: len(relay.recorder.messages) >= 6, what="6 messages accepted", timeout=30, child=process)
    process.send_signal(signal.SIGKILL)
    finish(process, "the sender after SIGKILL")
    relay.recorder.delay = 0
    in_flight = {email for email, status in statuses(staff).items() if status == "sending"}
    never_mailed = sorted(in_flight - set(relay.recorder.delivered()))
    assert never_mailed, f"claimed rows not yet mailed when killed: {in_flight}"
    gone, removed = never_mailed[0], never_mailed[-1] if len(never_mailed) > 1 else None
    assert mailer(workdir, env, "unsubscribe", gone).exit_code == 0
    if removed:
        assert mailer(workdir, env, "subscribers", "remove", "staff", removed).exit_code == 0
    result = mailer(workdir, env, *SEND)
    assert result.exit_code == 0, result.stdout + result.stderr
    delivered = relay.recorder.delivered()
    assert gone not in delivered and removed not in delivered
    assert statuses(staff)[gone] == "skipped"
    assert set(delivered) == set(recipients) - {gone, removed}


def test_unsubscribes_and_removals_during_a_long_send_are_honoured(staff: Engine, relay: FaultServer) -> None:
    recipients = [f"p{i:03d}@example.org" for i in range(8)]
    for address in recipients:
        add_subscriber(staff, "staff", address)
    relay.recorder.delay = 0.2  # one connection: 8 x 0.2 s, a claim of at most 3 rows ahead
    settings = settings_for(relay.port, str(staff.url.render_as_string(hide_password=False)), smtp_pool_size=1)

    def change_audience_after_the_first_message() -> None:
        relay.recorder.wait_for(1, timeout=30)
        unsubscribe(staff, "p007@example.org")
        remove_subscriber(staff, "staff", "p006@example.org")

    watcher = threading.Thread(target=change_audience_after_the_first_message, daemon=True)
    watcher.start()
    summary = asyncio.run(send_to_list(staff, settings, ISSUE, "staff"))
    watcher.join(timeout=30)
    assert set(relay.recorder.delivered()) == set(recipients[:6])
    assert (summary.sent, summary.skipped) == (6, 2)
    assert {statuses(staff)[a] for a in recipients[6:]} == {"skipped"}


# --- 2. a lost or late reply after the end of data: uncertain, held, resent only on request ------


def test_lost_or_late_reply_is_held_as_uncertain_and_resent_only_on_request(
    workdir: Path, staff: Engine, database_url: str, relay: FaultServer
) -> None:
    for address in ["ana@example.org", "lost-1@example.org", "late-1@example.org", "bob@example.org"]:
        add_subscriber(staff, "staff", address)
    relay.recorder.late_seconds = 3
    env = environment(relay.port, database_url, MAILER_SMTP_TIMEOUT="1")
    first = mailer(workdir, env, *SEND)
    assert first.exit_code == 3, first.stdout + first.stderr
    assert relay.recorder.delivered() == dict.fromkeys(
        ["ana@example.org", "lost-1@example.org", "late-1@example.org", "bob@example.org"], 1
    )
    assert "2 uncertain (no reply after the end of data; not resent)" in first.stdout
    assert first.stderr == (
        "2 messages may have been delivered (no reply after the end of data) and were not sent again; "
        "to send them again on purpose: mailer send issues/2016-02.yaml --list staff --retry-uncertain\n"
    )
    status = mailer(workdir, env, "status", "issues/2016-02.yaml").stdout.splitlines()
    assert status[0] == "2016-02 to 'staff': 2 sent, 0 pending, 0 failed, 2 uncertain, 0 skipped"
    assert {line.split(": ")[1] for line in status[1:] if line.startswith("  uncertain (not resent)")} == {
        "late-1@example.org",
        "lost-1@example.org",
    }
    again = mailer(workdir, env, *SEND)
    assert again.exit_code == 3 and "--retry-uncertain" in again.stderr
    assert relay.recorder.attempts["lost-1@example.org"] == 1 and relay.recorder.attempts["late-1@example.org"] == 1
    resent = mailer(workdir, env, *SEND, "--retry-uncertain")
    assert resent.exit_code == 0, resent.stdout + resent.stderr
    assert (
        relay.recorder.delivered()["lost-1@example.org"] == 2 and relay.recorder.delivered()["late-1@example.org"] == 2
    )
    assert flagged(staff) == {"lost-1@example.org", "late-1@example.org"}
    status = mailer(workdir, env, "status", "issues/2016-02.yaml").stdout.splitlines()
    assert status[0] == "2016-02 to 'staff': 4 sent, 0 pending, 0 failed, 0 skipped"
    assert "  uncertain: lost-1@example.org (resent; may have been delivered twice)" in status


# --- 3. a relay that refuses the session or cannot be reached ------------------------------------


def test_a_refused_mail_from_stops_the_send_and_leaves_every_row_pending(
    workdir: Path, staff: Engine, database_url: str, relay: FaultServer
) -> None:
    for i in range(30):
        add_subscriber(staff, "staff", f"p{i:03d}@example.org")
    relay.recorder.mail_reply = "530 5.7.0 Authentication required"
    result = mailer(workdir, environment(relay.port, database_url), *SEND)
    assert result.exit_code == 3, result.stdout + result.stderr
    [line] = result.stderr.splitlines()
    assert "530" in line
    assert set(statuses(staff).values()) == {"pending"}
    assert relay.recorder.attempts == {}


@pytest.mark.parametrize("subscribers", [1, 60])  # more rows than connections: every worker fails at once
def test_an_unreachable_relay_stops_within_seconds_when_nothing_was_sent(
    workdir: Path, staff: Engine, database_url: str, subscribers: int
) -> None:
    for i in range(subscribers):
        add_subscriber(staff, "staff", f"p{i}@example.org")
    port = free_port()  # nothing listens there
    process = start_mailer(
        *SEND, cwd=workdir, env=environment(port, database_url), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    started = time.monotonic()
    _, err = finish(process, "the sender with no relay to reach", timeout=20)
    assert time.monotonic() - started < 20
    assert process.returncode == 3
    [line] = err.splitlines()
    assert f"127.0.0.1:{port}" in line and "smtp_host" in line and "smtp_port" in line
    assert set(statuses(staff).values()) == {"pending"}


def test_a_relay_that_greets_with_421_fails_nobody_and_the_send_stops_with_rows_pending(
    workdir: Path, staff: Engine, database_url: str
) -> None:
    """421 at the greeting is the service saying "not now": no recipient's attempts are used up."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def greet_421() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"421 4.3.2 too many connections\r\n")

    server = threading.Thread(target=greet_421, daemon=True)
    server.start()
    try:
        for i in range(20):
            add_subscriber(staff, "staff", f"p{i}@example.org")
        env = {**environment(listener.getsockname()[1], database_url), "MAILER_RETRY_BASE_DELAY": "0.1"}
        started = time.monotonic()
        result = mailer(workdir, env, *SEND)
    finally:
        stop.set()
        server.join(timeout=5)
        listener.close()
    assert time.monotonic() - started < 30
    assert result.exit_code == 3
    assert "421" in result.stderr and "smtp_host" in result.stderr
    assert set(statuses(staff).values()) == {"pending"}


def test_a_relay_that_goes_away_mid_send_shows_retrying_and_the_send_goes_on(
    workdir: Path, staff: Engine, database_url: str, relay: FaultServer
) -> None:
    recipients = [f"p{i:03d}@example.org" for i in range(30)]
    for address in recipients:
        add_subscriber(staff, "staff", address)
    relay.recorder.delay = 0.05

    def away_and_back() -> None:
        relay.recorder.wait_for(5, timeout=30)
        relay.stop()
        time.sleep(1.5)  # down for a while (the check after it is positive: the notice and a finished send)
        relay.recorder.delay = 0
        relay.start_again()

    outage = threading.Thread(target=away_and_back, daemon=True)
    outage.start()
    result = mailer(workdir, environment(relay.port, database_url), *SEND)
    outage.join(timeout=30)
    assert re.search(r"relay unreachable, retrying in \d+ s", result.stderr), result.stderr
    delivered = relay.recorder.delivered()
    held = {email for email, status in statuses(staff).items() if status == "uncertain"}
    assert set(delivered) | held == set(recipients), "every recipient delivered, or held as uncertain"
    assert {email for email, status in statuses(staff).items() if status != "sent"} == held
    assert result.exit_code == (3 if held else 0)


# --- 4. PostgreSQL: claims that expire, a dropped database connection ---------------------------


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_live_sender_takes_over_a_dead_senders_rows_within_the_lease(
    workdir: Path, staff: Engine, database_url: str, relay: FaultServer
) -> None:
    recipients = [f"p{i:03d}@example.org" for i in range(100)]
    for address in recipients:
        add_subscriber(staff, "staff", address)
    relay.recorder.delay = (
        1.0  # slow until the first sender is killed: alone it needs 100 x 1 / 4 s, time for a slow start
    )
    env = environment(relay.port, database_url)
    doomed = start_mailer(*SEND, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_until(lambda: len(relay.recorder.messages) >= 4, what="the first sender under way", timeout=30, child=doomed)
    [dead] = claimants(staff)
    survivor = start_mailer(*SEND, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_until(lambda: len(claimants(staff)) == 2, what="both senders hold claims", timeout=30, child=survivor)
    doomed.send_signal(signal.SIGKILL)
    finish(doomed, "the first sender after SIGKILL")
    killed_at = time.monotonic()
    with staff.connect() as connection:
        abandoned = set(
            connection.execute(
                sa.select(deliveries.c.email).where(deliveries.c.status == "sending", deliveries.c.claimed_by == dead)
            ).scalars()
        )
    assert abandoned
    relay.recorder.delay = 0
    out, err = finish(survivor, "the surviving sender", timeout=60)
    assert survivor.returncode == 0, out + err
    assert time.monotonic() - killed_at < 5 + 10  # the lease, plus the survivor's own sending
    delivered = relay.recorder.delivered()
    assert set(delivered) == set(recipients)
    assert abandoned <= flagged(staff)
    assert {email for email, count in delivered.items() if count > 1} <= flagged(staff)
    assert "resent after an interrupted send" in out
    assert set(statuses(staff).values()) == {"sent"}


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_terminated_database_connection_mid_send_is_reconnected(
    workdir: Path, staff: Engine, database_url: str, relay: FaultServer
) -> None:
    recipients = [f"p{i:03d}@example.org" for i in range(40)]
    for address in recipients:
        add_subscriber(staff, "staff", address)
    relay.recorder.delay = 0.05
    name = f"mailer-test-{uuid.uuid4().hex[:8]}"
    env = environment(relay.port, f"{database_url}&application_name={name}")
    process = start_mailer(*SEND, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_until(lambda: len(relay.recorder.messages) >= 5, what="the sender under way", timeout=30, child=process)
    with staff.connect() as connection:
        ended = connection.execute(
            sa.text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = :name"),
            {"name": name},
        ).scalar_one()
    assert ended >= 1
    out, err = finish(process, "the sender whose database connection was ended")
    assert "Traceback" not in err
    assert process.returncode == 0, out + err
    assert set(relay.recorder.delivered()) == set(recipients)
    assert set(statuses(staff).values()) == {"sent"}


# --- 5. SQLite: a claim survives a power cut -------------------------------------------------------


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sqlite_ledger_commits_are_synchronous_full(staff: Engine) -> None:
    """WAL with synchronous=NORMAL may lose the last commits on power loss; FULL syncs the WAL at each commit."""
    ledger = Ledger(staff, "2016-02", "staff")
    try:
        assert ledger.conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    finally:
        ledger.close()
    with staff.connect() as connection:  # the pool's other connections keep the cheaper default
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1


# --- 6. exit codes: 0 only when the ledger is complete ---------------------------------------------


def test_a_rerun_that_leaves_failed_rows_exits_3(
    workdir: Path, staff: Engine, database_url: str, relay: FaultServer
) -> None:
    for address in ["ana@example.org", "perm@example.org"]:
        add_subscriber(staff, "staff", address)
    env = environment(relay.port, database_url)
    assert mailer(workdir, env, *SEND).exit_code == 3
    again = mailer(workdir, env, *SEND)
    assert again.exit_code == 3
    assert again.stderr == (
        "1 failed (see mailer status); to try them again: "
        "mailer send issues/2016-02.yaml --list staff --retry-failed --include-permanent\n"
    )
    assert delivery_status(staff, "2016-02", "staff").counts == {"sent": 1, "failed": 1}


# --- claims go forward through the list, and still find rows given back behind them --------------


def test_rows_given_back_behind_the_last_claim_are_claimed_again(staff: Engine) -> None:
    """Claims start after the last row claimed (PostgreSQL would step over every claimed row's dead
    index entry otherwise); rows released behind that point, as an interrupted sender gives them back,
    are still claimed, and a recipient who unsubscribed meanwhile is skipped, not claimed."""
    people = [f"reader{n:02d}@example.org" for n in range(12)]
    for address in people:
        add_subscriber(staff, "staff", address, name=address.split("@")[0].title())
    ledger = Ledger(staff, "2016-02", "staff")
    try:
        ledger.recover()
        ledger.prepare()
        first = ledger.claim(4)
        second = ledger.claim(4)
        ledger.release([row.delivery_id for row in first.rows])
        unsubscribe(staff, people[1])
        rest = ledger.claim(100)
        again = ledger.claim(100)
    finally:
        ledger.close()
    assert [row.email for row in second.rows] == people[4:8]
    assert sorted(row.email for row in rest.rows) == sorted([people[0], *people[2:4], *people[8:]])
    assert rest.skipped == 1 and again.rows == []
    assert all(row.name == row.email.split("@")[0].title() for row in rest.rows)
    assert statuses(staff)[people[1]] == "skipped"
