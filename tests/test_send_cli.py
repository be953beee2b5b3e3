"""`mailer send` and `mailer status` as processes: exit codes, a SIGKILL mid-send, concurrent senders."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from mailer.audience.database import open_database
from mailer.audience.lists import add_subscriber, create_list
from mailer.settings import Settings
from tests.conftest import SECRET
from tests.smtp_server import SMTPServer


def environment(settings: Settings, smtp_server: SMTPServer) -> dict[str, str]:
    return {
        **os.environ,
        "MAILER_DATABASE_URL": settings.database_url,
        "MAILER_SMTP_HOST": "127.0.0.1",
        "MAILER_SMTP_PORT": str(smtp_server.port),
        "MAILER_SMTP_TLS": "none",
        "MAILER_SENDER": "ICMPD Newsletter <newsletter@icmpd.org>",
        "MAILER_UNSUBSCRIBE_SECRET": SECRET,
        "MAILER_SMTP_POOL_SIZE": "4",
        "MAILER_RETRY_BASE_DELAY": "0.05",
    }


def mailer(workdir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailer", *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def staff(send_settings: Settings) -> Engine:
    engine = open_database(send_settings.database_url)
    create_list(engine, "staff", "All staff")
    return engine


def test_send_status_and_exit_codes(
    workdir: Path, staff: Engine, send_settings: Settings, smtp_server: SMTPServer
) -> None:
    env = environment(send_settings, smtp_server)
    for address in ["ana@example.org", "bob@example.org", "perm@example.org"]:
        add_subscriber(staff, "staff", address)
    result = mailer(workdir, env, "send", "issues/2016-02.yaml", "--list", "staff")
    assert result.returncode == 3
    assert re.fullmatch(
        r"2016-02 to 'staff': 2 sent, 1 failed \(1 permanent\), 0 skipped \(unsubscribed or suppressed\) in [\d.]+ s \(\d+/s\)\n",
        result.stdout,
    )
    status = mailer(workdir, env, "status", "issues/2016-02.yaml")
    assert status.stdout == (
        "2016-02 to 'staff': 2 sent, 0 pending, 1 failed, 0 skipped\n"
        "  failed (permanent): perm@example.org: 550 5.1.1 no such user\n"
    )
    again = mailer(workdir, env, "send", "issues/2016-02.yaml", "--list", "staff")
    assert again.returncode == 0 and again.stdout.startswith("2016-02 to 'staff': 0 sent, 0 failed")
    assert smtp_server.recorder.delivered() == {"ana@example.org": 1, "bob@example.org": 1}


def test_test_send_and_dry_run_record_nothing(
    workdir: Path, staff: Engine, send_settings: Settings, smtp_server: SMTPServer
) -> None:
    env = environment(send_settings, smtp_server)
    add_subscriber(staff, "staff", "ana@example.org", name="Ana")
    result = mailer(workdir, env, "send", "issues/2016-02.yaml", "--to", "me@example.org")
    assert (result.returncode, result.stdout) == (0, "250 2.0.0 queued\n")
    dry = mailer(workdir, env, "send", "issues/2016-02.yaml", "--list", "staff", "--dry-run", "-o", "out")
    assert dry.stdout == "dry run: wrote 1 messages to out/; nothing was sent\n"
    [eml] = (workdir / "out").iterdir()
    assert b"To: Ana <ana@example.org>" in eml.read_bytes()
    assert mailer(workdir, env, "status", "issues/2016-02.yaml").stdout == "2016-02 has not been sent to any list\n"
    assert smtp_server.recorder.delivered() == {"me@example.org": 1}


def test_missing_sender_fails_before_any_connection(
    workdir: Path, staff: Engine, send_settings: Settings, smtp_server: SMTPServer
) -> None:
    env = environment(send_settings, smtp_server)
    del env["MAILER_SENDER"]
    add_subscriber(staff, "staff", "ana@example.org")
    result = mailer(workdir, env, "send", "issues/2016-02.yaml", "--list", "staff")
    assert (result.returncode, result.stderr) == (
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
    env = environment(send_settings, smtp_server)
    process = subprocess.Popen(
        [sys.executable, "-m", "mailer", "send", "issues/2016-02.yaml", "--list", "staff"], cwd=workdir, env=env
    )
    deadline = time.monotonic() + 60
    while len(smtp_server.recorder.messages) < 15 and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    smtp_server.recorder.delay = 0
    assert len(smtp_server.recorder.messages) < 60
    result = mailer(workdir, env, "send", "issues/2016-02.yaml", "--list", "staff")
    assert result.returncode == 0, result.stderr
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
    env = environment(send_settings, smtp_server)
    process = subprocess.Popen(
        [sys.executable, "-m", "mailer", "send", "issues/2016-02.yaml", "--list", "staff"],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    while len(smtp_server.recorder.messages) < 8:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 3
    assert "interrupted: run the same command again to send the rest" in out
    sent = int(re.search(r": (\d+) sent", out).group(1))  # type: ignore[union-attr]
    assert sent == len(smtp_server.recorder.messages) < 40
    smtp_server.recorder.delay = 0
    assert mailer(workdir, env, "send", "issues/2016-02.yaml", "--list", "staff").returncode == 0
    assert all(count == 1 for count in smtp_server.recorder.delivered().values())
    assert len(smtp_server.recorder.delivered()) == 40


def test_two_senders_never_send_the_same_recipient_twice(
    workdir: Path, staff: Engine, send_settings: Settings, smtp_server: SMTPServer
) -> None:
    for i in range(60):
        add_subscriber(staff, "staff", f"p{i:03d}@example.org")
    smtp_server.recorder.delay = 0.3  # the first sender is still busy when the second has started
    env = environment(send_settings, smtp_server)
    command = [sys.executable, "-m", "mailer", "send", "issues/2016-02.yaml", "--list", "staff"]
    first = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not smtp_server.recorder.messages:
        time.sleep(0.01)
    second = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out2, err2 = second.communicate(timeout=120)
    out1, _ = first.communicate(timeout=120)
    delivered = smtp_server.recorder.delivered()
    assert len(delivered) == 60 and all(count == 1 for count in delivered.values())
    if staff.dialect.name == "sqlite":
        assert second.returncode == 1
        assert "another mailer send of 2016-02 to 'staff' is running" in err2
    else:
        shared = [int(re.search(r": (\d+) sent", out).group(1)) for out in (out1, out2)]  # type: ignore[union-attr]
        assert sum(shared) == 60 and min(shared) > 0
