"""`mailer send` and `mailer status`: exit codes and output in process; a SIGKILL, Ctrl-C and concurrent senders as processes."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import Result
from sqlalchemy.engine import Engine

from mailer.audience.database import deliveries, open_database
from mailer.audience.lists import add_subscriber, create_list
from mailer.settings import Settings
from tests.cli_helpers import run_cli, start_mailer
from tests.conftest import fail_process, send_environment, wait_until
from tests.smtp_server import SMTPServer

SEND = ("send", "issues/2016-02.yaml", "--list", "staff")


def mailer(workdir: Path, env: dict[str, str | None], *args: str) -> Result:
    return run_cli(*args, cwd=workdir, env=env)


def sender(workdir: Path, env: dict[str, str | None], **pipes: int) -> subprocess.Popen[str]:
    """`mailer send` as a process of its own."""
    return start_mailer(*SEND, cwd=workdir, env={k: v for k, v in env.items() if v is not None}, **pipes)


def finish(process: subprocess.Popen[str], what: str, timeout: float = 60) -> tuple[str, str]:
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        fail_process(process, f"{what}: still running after {timeout:g} s")


def data_commands(smtp_server: SMTPServer) -> int:
    with smtp_server.recorder.lock:
        return sum(smtp_server.recorder.attempts.values())


def claimants(engine: Engine) -> set[str]:
    """The senders that have claimed rows of the ledger so far."""
    query = sa.select(deliveries.c.claimed_by).distinct().where(deliveries.c.claimed_by != "")
    with engine.connect() as connection:
        return set(connection.execute(query).scalars())


@pytest.fixture
def staff(send_settings: Settings) -> Engine:
    engine = open_database(send_settings.database_url)
    create_list(engine, "staff", "All staff")
    return engine


def test_send_status_and_exit_codes(
    workdir: Path, staff: Engine, send_settings: Settings, smtp_server: SMTPServer
) -> None:
    env: dict[str, str | None] = {**send_environment(send_settings, smtp_server)}
    for address in ["ana@example.org", "bob@example.org", "perm@example.org"]:
        add_subscriber(staff, "staff", address)
    result = mailer(workdir, env, *SEND)
    assert result.exit_code == 3
    assert re.fullmatch(
        r"2016-02 to 'staff': 2 sent, 1 failed \(1 permanent\), 0 skipped \(unsubscribed or suppressed\) in [\d.]+ s \(\d+/s\)\n",
        result.stdout,
    )
    status = mailer(workdir, env, "status", "issues/2016-02.yaml")
    assert status.stdout == (
        "2016-02 to 'staff': 2 sent, 0 pending, 1 failed, 0 skipped\n"
        "  failed (permanent): perm@example.org: 554 5.7.1 message refused\n"
    )
    again = mailer(workdir, env, *SEND)  # the permanent failure is still in the ledger: not complete, so exit 3
    assert again.exit_code == 3 and again.stdout.startswith("2016-02 to 'staff': 0 sent, 0 failed")
    assert smtp_server.recorder.delivered() == {"ana@example.org": 1, "bob@example.org": 1}


def test_test_send_and_dry_run_record_nothing(
    workdir: Path, staff: Engine, send_settings: Settings, smtp_server: SMTPServer
) -> None:
    env: dict[str, str | None] = {**send_environment(send_settings, smtp_server)}
    add_subscriber(staff, "staff", "ana@example.org", name="Ana")
    result = mailer(workdir, env, "send", "issues/2016-02.yaml", "--to", "me@example.org")
    assert (result.exit_code, result.stdout) == (0, "me@example.org: 250 2.0.0 queued\n")
    dry = mailer(workdir, env, *SEND, "--dry-run", "-o", "out")
    assert dry.stdout == "dry run: wrote 1 message to out/; nothing was sent\n"
    [eml] = (workdir / "out").iterdir()
    assert b"To: Ana <ana@example.org>" in eml.read_bytes()
    assert mailer(workdir, env, "status", "issues/2016-02.yaml").stdout == "2016-02 has not been sent to any list\n"
    assert smtp_server.recorder.delivered() == {"me@example.org": 1}


def test_missing_sender_fails_before_any_connection(
    workdir: Path, staff: Engine, send_settings: Settings, smtp_server: SMTPServer
) -> None:
    env: dict[str, str | None] = {**send_environment(send_settings, smtp_server)}
    env["MAILER_SENDER"] = None
    add_subscriber(staff, "staff", "ana@example.org")
    result = mailer(workdir, env, *SEND)
    assert (result.exit_code, result.stderr) == (
        1,
        "sender is not set; set it in mailer.toml or MAILER_SENDER, e.g. 'Newsletter <news@example.org>'\n",
    )
    assert smtp_server.recorder.attempts == {}


def test_a_send_killed_mid_way_resumes_without_losing_or_duplicating(
    workdir: Path, staff: Engine, send_settings: Settings, smtp_server: SMTPServer
) -> None:
    recipients = [f"p{i:03d}@example.org" for i in range(60)]
    for address in recipients:
        add_subscriber(staff, "staff", address)
    smtp_server.recorder.delay = 0.05
    env: dict[str, str | None] = {**send_environment(send_settings, smtp_server)}
    process = sender(workdir, env, stderr=subprocess.PIPE)
    wait_until(
        lambda: len(smtp_server.recorder.messages) >= 15,
        what="15 messages accepted from the sender",
        timeout=30,
        child=process,
    )
    process.send_signal(signal.SIGKILL)
    finish(process, "the sender after SIGKILL")
    smtp_server.recorder.delay = 0
    assert len(smtp_server.recorder.messages) < 60
    result = mailer(workdir, env, *SEND)
    assert result.exit_code == 0, result.stderr
    delivered = smtp_server.recorder.delivered()
    assert set(delivered) == set(recipients)
    status = mailer(workdir, env, "status", "issues/2016-02.yaml").stdout.splitlines()
    assert status[0] == "2016-02 to 'staff': 60 sent, 0 pending, 0 failed, 0 skipped"
    uncertain = {line.split()[1] for line in status[1:] if line.startswith("  uncertain:")}
    twice = {address for address, count in delivered.items() if count > 1}
    assert twice <= uncertain
    assert len(uncertain) <= 3 * 4 + 8  # three pools' worth claimed, plus what was accepted in the last 50 ms


def test_ctrl_c_finishes_messages_in_flight_and_exits_cleanly(
    workdir: Path, staff: Engine, send_settings: Settings, smtp_server: SMTPServer
) -> None:
    for i in range(40):
        add_subscriber(staff, "staff", f"p{i:03d}@example.org")
    smtp_server.recorder.delay = 0.05
    env: dict[str, str | None] = {**send_environment(send_settings, smtp_server)}
    process = sender(workdir, env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_until(
        lambda: len(smtp_server.recorder.messages) >= 8,
        what="8 messages accepted from the sender",
        timeout=30,
        child=process,
    )
    process.send_signal(signal.SIGINT)
    out, err = finish(process, "the sender after Ctrl-C", timeout=30)
    assert process.returncode == 3, err
    assert "interrupted: run the same command again to send the rest" in out
    sent = int(re.search(r": (\d+) sent", out).group(1))  # type: ignore[union-attr]
    assert sent == len(smtp_server.recorder.messages) < 40
    smtp_server.recorder.delay = 0
    assert mailer(workdir, env, *SEND).exit_code == 0
    assert all(count == 1 for count in smtp_server.recorder.delivered().values())
    assert len(smtp_server.recorder.delivered()) == 40


def test_two_senders_never_send_the_same_recipient_twice(
    workdir: Path, staff: Engine, send_settings: Settings, smtp_server: SMTPServer
) -> None:
    for i in range(60):
        add_subscriber(staff, "staff", f"p{i:03d}@example.org")
    smtp_server.recorder.delay = 0.5  # slow until the second sender is under way: alone, the first needs 60 x 0.5 / 4 s
    env: dict[str, str | None] = {**send_environment(send_settings, smtp_server)}
    first = sender(workdir, env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_until(lambda: data_commands(smtp_server) > 0, what="the first sender's first message", timeout=30, child=first)
    if staff.dialect.name == "sqlite":
        second = mailer(workdir, env, *SEND)  # in this process, while the first one holds the send lock
        smtp_server.recorder.delay = 0
    else:
        seen: list[set[str]] = []

        def full_speed_once_both_claimed() -> None:
            deadline = time.monotonic() + 30
            while len(found := claimants(staff)) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            seen.append(found)
            smtp_server.recorder.delay = 0

        watcher = threading.Thread(target=full_speed_once_both_claimed, daemon=True)
        watcher.start()
        second = mailer(workdir, env, *SEND)  # in this process, sharing the ledger with the first
        watcher.join(timeout=30)
        assert seen and len(seen[0]) == 2, f"both senders should have claimed rows; claimants: {seen}"
    out1, err1 = finish(first, "the first sender")
    assert first.returncode == 0, err1
    delivered = smtp_server.recorder.delivered()
    assert len(delivered) == 60 and all(count == 1 for count in delivered.values())
    if staff.dialect.name == "sqlite":
        assert second.exit_code == 1
        assert "another mailer send of 2016-02 to 'staff' is running" in second.stderr
    else:
        shared = [int(re.search(r": (\d+) sent", out).group(1)) for out in (out1, second.stdout)]  # type: ignore[union-attr]
        assert sum(shared) == 60 and min(shared) > 0
