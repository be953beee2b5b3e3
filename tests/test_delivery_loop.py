"""The delivery loop end to end: a real send through aiosmtpd, bounces and complaints built from what it sent and
dropped into a real Dovecot, `mailer bounces fetch` over IMAPS, then the suppressions, `mailer report`,
`mailer status` and the next issue's send that skips who must not be mailed again.

Recipients (tests/smtp_server.py): nouser-* is refused at RCPT with 550 5.1.1; the others are accepted, and
the test then bounces some of them as the destination would, later.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from starlette.testclient import TestClient

from mailer.audience.database import delivery_events, open_database, suppressions
from mailer.audience.lists import add_subscriber, create_list
from mailer.delivery.bounces import FetchSummary, process_bounce
from mailer.settings import load_settings
from mailer.web.public_web import create_app
from tests.cli_helpers import run_cli, start_mailer
from tests.conftest import ROOT, SECRET, read_line
from tests.dovecot_server import PASSWORD, DovecotServer
from tests.smtp_server import Received, SMTPServer

BOUNCES = "bounces@icmpd.org"
PEOPLE = ["ana@example.org", "gone@example.org", "full@example.org", "spam@example.org", "nouser-1@example.org"]


@pytest.fixture
def dovecot() -> Iterator[DovecotServer]:
    with DovecotServer() as server:
        yield server


@pytest.fixture
def env(smtp_server: SMTPServer, dovecot: DovecotServer, database_url: str) -> dict[str, str]:
    return {
        "MAILER_DATABASE_URL": database_url,
        "MAILER_SMTP_HOST": "127.0.0.1",
        "MAILER_SMTP_PORT": str(smtp_server.port),
        "MAILER_SMTP_TLS": "none",
        "MAILER_SENDER": "ICMPD Newsletter <newsletter@icmpd.org>",
        "MAILER_UNSUBSCRIBE_SECRET": SECRET,
        "MAILER_RETRY_BASE_DELAY": "0.05",
        "MAILER_BOUNCE_ADDRESS": BOUNCES,
        "MAILER_BOUNCE_MAILBOX": dovecot.url("imaps"),
        "MAILER_BOUNCE_PASSWORD": PASSWORD,
        "MAILER_BOUNCE_CA_FILE": str(dovecot.ca.ca_file),
    }


@pytest.fixture
def staff(workdir: Path, database_url: str) -> Iterator[Engine]:
    engine = open_database(database_url)
    create_list(engine, "staff")
    for address in PEOPLE:
        add_subscriber(engine, "staff", address)
    yield engine
    engine.dispose()


def mailer(workdir: Path, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = run_cli(*args, cwd=workdir, env=env)
    return result.exit_code, result.stdout, result.stderr


def sent_to(smtp_server: SMTPServer) -> dict[str, Received]:
    return {message.recipients[0]: message for message in smtp_server.recorder.messages}


def dsn(message: Received, status: str, diagnostic: str, *, bounce_id: str) -> bytes:
    """What the destination MTA mails back to the envelope sender (our VERP address) when it gives up."""
    head, _, _ = message.data.replace(b"\r\n", b"\n").partition(b"\n\n")
    return (
        (
            f"From: MAILER-DAEMON@mx.example.org (Mail Delivery System)\nTo: {message.mail_from}\n"
            f"Subject: Undelivered Mail Returned to Sender\nMessage-ID: <{bounce_id}@mx.example.org>\nMIME-Version: 1.0\n"
            'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\n\n'
            "--b1\nContent-Type: text/plain\n\nYour message could not be delivered.\n\n"
            "--b1\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.org\n\n"
            f"Final-Recipient: rfc822; {message.recipients[0]}\nAction: failed\nStatus: {status}\n"
            f"Diagnostic-Code: smtp; {diagnostic}\n\n"
            f"--b1\nContent-Type: text/rfc822-headers\n\n{head.decode()}\n\n--b1--\n"
        )
        .replace("\n", "\r\n")
        .encode()
    )


def arf(message: Received, *, report_id: str) -> bytes:
    """A feedback-loop abuse report (RFC 5965) about our message, as a mailbox provider sends one."""
    original = message.data.replace(b"\r\n", b"\n").decode()
    return (
        (
            f"From: feedback@fbl.example.org\nTo: {BOUNCES}\nSubject: Abuse report\nMessage-ID: <{report_id}@fbl>\n"
            'MIME-Version: 1.0\nContent-Type: multipart/report; report-type=feedback-report; boundary="f1"\n\n'
            "--f1\nContent-Type: text/plain\n\nThis is an email abuse report.\n\n"
            "--f1\nContent-Type: message/feedback-report\n\nFeedback-Type: abuse\nUser-Agent: fbl/1.0\nVersion: 1\n\n"
            f"--f1\nContent-Type: message/rfc822\n\nReturn-Path: <{message.mail_from}>\n{original}\n--f1--\n"
        )
        .replace("\n", "\r\n")
        .encode()
    )


def suppressed(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return {row.email_key: row.reason for row in conn.execute(sa.select(suppressions))}


def second_issue(workdir: Path) -> Path:
    shutil.copy(ROOT / "issues" / "2015-10.yaml", workdir / "issues" / "2016-03.yaml")
    path = workdir / "issues" / "2016-03.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("date: 2015-10-", "date: 2016-03-", 1), encoding="utf-8")
    return path


def test_bounces_and_complaints_suppress_their_addresses_and_the_next_issue_skips_them(
    workdir: Path, env: dict[str, str], staff: Engine, smtp_server: SMTPServer, dovecot: DovecotServer
) -> None:
    code, out, err = mailer(workdir, env, "send", "issues/2016-02.yaml", "--list", "staff")
    assert code == 3, out + err  # nouser-1 was refused at RCPT: a permanent failure
    first = sent_to(smtp_server)
    assert sorted(first) == sorted(set(PEOPLE) - {"nouser-1@example.org"})
    tokens = {address: message.mail_from for address, message in first.items()}
    assert all(re.fullmatch(r"bounces\+[0-9a-z]+\.[a-z2-7]{13}@icmpd\.org", sender) for sender in tokens.values())
    assert len(set(tokens.values())) == len(tokens), "each message's envelope sender names its own delivery"
    assert suppressed(staff) == {"nouser-1@example.org": "bounced"}, "a 5.1.1 at RCPT is a hard bounce at once"

    dovecot.deliver(dsn(first["gone@example.org"], "5.1.1", "550 5.1.1 User unknown", bounce_id="b1"))
    dovecot.deliver(dsn(first["full@example.org"], "4.2.2", "452 4.2.2 Mailbox full", bounce_id="b2"))
    dovecot.deliver(arf(first["spam@example.org"], report_id="r1"))
    forged = first["ana@example.org"]
    forged.mail_from = "bounces+1.aaaaaaaaaaaaa@icmpd.org"
    dovecot.deliver(dsn(forged, "5.1.1", "550 5.1.1 User unknown", bounce_id="forged"))
    dovecot.deliver(
        b"From: ana@example.org\r\nTo: bounces@icmpd.org\r\nSubject: Thanks!\r\nMessage-ID: <hi@x>\r\n\r\nGreat issue.\r\n"
    )

    code, out, err = mailer(workdir, env, "bounces", "fetch")
    assert code == 0, out + err
    assert out.splitlines() == [
        "suppressed (bounced): gone@example.org",
        "suppressed (complaint): spam@example.org",
        "5 messages read: 1 complaint, 1 forged, 1 hard, 1 not-a-bounce, 1 soft; 2 addresses suppressed",
    ]
    assert suppressed(staff) == {
        "nouser-1@example.org": "bounced",
        "gone@example.org": "bounced",
        "spam@example.org": "complaint",
    }, "one soft bounce suppresses nobody; a forged token nobody"
    assert dovecot.folder_count("INBOX", "UNSEEN") == 1, "every bounce is marked handled; ana's thanks stays unread"

    # the same DSN delivered again, and a fetch with nothing new: nothing counts twice
    dovecot.deliver(dsn(first["gone@example.org"], "5.1.1", "550 5.1.1 User unknown", bounce_id="b1"))
    assert mailer(workdir, env, "bounces", "fetch")[1] == "2 messages read: 1 not-a-bounce, 1 seen\n"
    assert mailer(workdir, env, "bounces", "fetch")[1] == "1 message read: 1 not-a-bounce\n"
    assert suppressed(staff)["gone@example.org"] == "bounced"

    # an unsubscribe through the link in ana's message counts against this issue
    link = re.search(rb"<(https://newsletter\.icmpd\.org/unsubscribe/[^>]+)>", first["ana@example.org"].data)
    assert link
    settings = load_settings(
        ROOT / "mailer.toml",
        unsubscribe_secret=SECRET,
        sender="news@icmpd.org",
        database_url=env["MAILER_DATABASE_URL"],
    )
    with TestClient(create_app(settings, staff), base_url="https://newsletter.icmpd.org") as web:
        answer = web.post(link.group(1).decode(), data={"List-Unsubscribe": "One-Click"})
        assert answer.status_code == 200, answer.text

    code, out, _ = mailer(workdir, env, "report", "issues/2016-02.yaml", "--json")
    figures = json.loads(out)
    assert {key: figures[key] for key in ("sent", "failed", "bounced_hard", "bounced_soft", "complaints", "unsubscribes")} == {
        "sent": 4, "failed": 1, "bounced_hard": 2, "bounced_soft": 1, "complaints": 1, "unsubscribes": 1,
    }  # fmt: skip
    assert [(reason["status"], reason["count"]) for reason in figures["reasons"]] == [("5.1.1", 2), ("4.2.2", 1)]
    code, out, _ = mailer(workdir, env, "report", "2016-02", "--list", "staff")
    assert (code, out.splitlines()) == (
        0,
        [
            "2016-02 to 'staff'",
            "  sent            4",
            "  failed          1",
            "  uncertain       0",
            "  pending         0",
            "  bounced         3  60.0%",
            "    hard          2  40.0%",
            "    soft          1  20.0%",
            "  complaints      1  20.00%",
            "  unsubscribes    1  20.0%",
            "  bounce reasons:",
            "    5.1.1: 2  550 5.1.1 User unknown",
            "    4.2.2: 1  452 4.2.2 Mailbox full",
        ],
    )
    status = mailer(workdir, env, "status", "issues/2016-02.yaml")[1]
    assert status.splitlines()[0].endswith("; since: 3 bounced (2 hard), 1 complaint, 1 unsubscribe")

    smtp_server.recorder.messages.clear()
    code, out, err = mailer(workdir, env, "send", str(second_issue(workdir).relative_to(workdir)), "--list", "staff")
    assert code == 0, out + err
    assert sorted(sent_to(smtp_server)) == ["full@example.org"], "bounced, complained and unsubscribed are skipped"

    code, _, err = mailer(workdir, env, "resubscribe", "spam@example.org")
    assert code == 1 and "--force" in err, "a complaint is lifted only on purpose"
    code, out, _ = mailer(workdir, env, "resubscribe", "nouser-1@example.org")
    assert (code, out) == (0, "nouser-1@example.org: suppression lifted (was bounced); mailed again through 'staff'\n")
    code, out, err = mailer(
        workdir, env, "resubscribe", "gone@example.org", "--list", "staff", "--reason", "new mailbox"
    )
    assert code == 0, out + err
    assert "gone@example.org" not in suppressed(staff)
    smtp_server.recorder.messages.clear()
    third = workdir / "issues" / "2016-04.yaml"
    third.write_text(second_issue(workdir).read_text(encoding="utf-8").replace("date: 2016-03-", "date: 2016-04-", 1))
    assert mailer(workdir, env, "send", "issues/2016-04.yaml", "--list", "staff")[0] == 3
    assert sorted(sent_to(smtp_server)) == ["full@example.org", "gone@example.org"], "resubscribed, mailed again"
    assert suppressed(staff)["nouser-1@example.org"] == "bounced", "refused again, suppressed again"


def test_soft_bounces_on_three_issues_in_a_row_suppress_unless_a_delivery_came_back_clean_between(
    workdir: Path, env: dict[str, str], staff: Engine, smtp_server: SMTPServer
) -> None:
    settings = load_settings(ROOT / "mailer.toml", unsubscribe_secret=SECRET, bounce_address=BOUNCES)
    slugs = []
    for number in range(1, 6):
        path = workdir / "issues" / f"2016-0{number + 2}.yaml"
        text = (ROOT / "issues" / "2016-02.yaml").read_text(encoding="utf-8")
        path.write_text(text.replace("date: 2016-02-", f"date: 2016-0{number + 2}-", 1), encoding="utf-8")
        slugs.append(path.name)
    summary = FetchSummary()
    for number, name in enumerate(slugs):
        smtp_server.recorder.messages.clear()
        exit_code = mailer(workdir, env, "send", f"issues/{name}", "--list", "staff")[0]
        assert exit_code == (3 if number == 0 else 0), "nouser-1 fails once, then it is suppressed"
        message = sent_to(smtp_server)["full@example.org"]
        if number == 1:
            continue  # this issue came back clean
        process_bounce(staff, settings, dsn(message, "4.2.2", "452 Mailbox full", bounce_id=f"s{number}"), summary)
        expected = {"nouser-1@example.org": "bounced"} | ({"full@example.org": "bounced"} if number == 4 else {})
        assert suppressed(staff) == expected, f"after issue {number + 1}"
    assert summary.outcomes == {"soft": 4}
    with staff.connect() as conn:
        note = conn.execute(
            sa.select(suppressions.c.note).where(suppressions.c.email_key == "full@example.org")
        ).scalar()
    assert note and note.startswith("3 soft bounces in a row")


def test_a_bounce_recorded_before_a_crash_is_only_marked_on_the_next_fetch(
    workdir: Path, env: dict[str, str], staff: Engine, smtp_server: SMTPServer, dovecot: DovecotServer
) -> None:
    """The fetch records a message, then marks it: a kill between the two must not count it twice."""
    mailer(workdir, env, "send", "issues/2016-02.yaml", "--list", "staff")
    raw = dsn(sent_to(smtp_server)["gone@example.org"], "5.1.1", "550 5.1.1 User unknown", bounce_id="crash")
    settings = load_settings(ROOT / "mailer.toml", unsubscribe_secret=SECRET, bounce_address=BOUNCES)
    assert process_bounce(staff, settings, raw, FetchSummary()) == "hard"  # recorded; the mark never came
    dovecot.deliver(raw)
    dovecot.deliver(b"not a mail at all \xff\xfe" * 10)
    dovecot.deliver(b"From: MAILER-DAEMON@x\r\nSubject: big\r\nMessage-ID: <big@x>\r\n\r\n" + b"x" * 10_000_000)
    dovecot.deliver(b'From: MAILER-DAEMON@x\r\nContent-Type: multipart/report; boundary="\r\n\r\n--\r\n--\r\n')
    code, out, err = mailer(workdir, env, "bounces", "fetch")
    assert code == 0, out + err
    assert out.splitlines()[-1].startswith("4 messages read: ") and "1 seen" in out
    with staff.connect() as conn:
        events = conn.execute(sa.select(sa.func.count()).where(delivery_events.c.email == "gone@example.org")).scalar()
    assert events == 1


def test_fetch_without_a_mailbox_or_with_a_wrong_password_is_one_line(
    workdir: Path, env: dict[str, str], staff: Engine
) -> None:
    code, out, err = mailer(workdir, {**env, "MAILER_BOUNCE_MAILBOX": ""}, "bounces", "fetch")
    assert (code, out) == (1, "") and err.startswith("bounce_mailbox is not set;") and err.count("\n") == 1
    code, out, err = mailer(workdir, {**env, "MAILER_BOUNCE_PASSWORD": "wrong-password"}, "bounces", "fetch")
    assert (
        code == 3 and err.count("\n") == 1 and "wrong-password" not in err and err.startswith("bounce mailbox imaps://")
    )


def test_a_fetch_killed_mid_way_and_run_again_records_every_bounce_exactly_once(
    workdir: Path, env: dict[str, str], database_url: str, smtp_server: SMTPServer, dovecot: DovecotServer
) -> None:
    engine = open_database(database_url)
    create_list(engine, "many")
    people = [f"gone-{number}@example.org" for number in range(120)]
    for address in people:
        add_subscriber(engine, "many", address)
    assert mailer(workdir, env, "send", "issues/2016-02.yaml", "--list", "many")[0] == 0
    for number, (address, message) in enumerate(sent_to(smtp_server).items()):
        dovecot.deliver(dsn(message, "5.1.1", f"550 5.1.1 <{address}> User unknown", bounce_id=f"k{number}"))
    child = start_mailer(
        "bounces",
        "fetch",
        cwd=workdir,
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None
    first = read_line(child, timeout=30, what="the first suppressed address")
    assert first.startswith("suppressed (bounced): ")
    child.kill()
    child.wait(timeout=10)
    assert dovecot.folder_count("INBOX", "UNSEEN") > 0, "killed mid-way, with messages left to read"
    code, out, err = mailer(workdir, env, "bounces", "fetch")
    assert code == 0, out + err
    with engine.connect() as conn:
        events = Counter(
            conn.execute(sa.select(delivery_events.c.email).where(delivery_events.c.kind == "hard")).scalars()
        )
    assert events == Counter(people), "every bounce recorded once, none lost, none twice"
    assert set(suppressed(engine)) == set(people)
    assert dovecot.folder_count("INBOX", "UNSEEN") == 0
    engine.dispose()


def test_fetch_watch_acts_on_a_bounce_as_it_arrives_and_stops_on_ctrl_c(
    workdir: Path, env: dict[str, str], staff: Engine, smtp_server: SMTPServer, dovecot: DovecotServer
) -> None:
    assert mailer(workdir, env, "send", "issues/2016-02.yaml", "--list", "staff")[0] == 3
    message = sent_to(smtp_server)["gone@example.org"]
    child = start_mailer(
        "bounces", "fetch", "--watch", cwd=workdir, env={**env, "PYTHONUNBUFFERED": "1", "MAILER_BOUNCE_POLL_SECONDS": "60"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        dovecot.deliver(dsn(message, "5.1.1", "550 5.1.1 User unknown", bounce_id="w1"))
        assert read_line(child, timeout=20, what="the first bounce") == "suppressed (bounced): gone@example.org\n"
        later = sent_to(smtp_server)["spam@example.org"]
        dovecot.deliver(arf(later, report_id="w2"))  # while the watch waits in IDLE, polling only every 60 s
        assert (
            read_line(child, timeout=20, what="the bounce seen by IDLE") == "suppressed (complaint): spam@example.org\n"
        )
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
    assert (child.returncode, out) == (0, "2 messages read: 1 complaint, 1 hard; 2 addresses suppressed\n")
    assert err == f"watching {env['MAILER_BOUNCE_MAILBOX']} (IMAP IDLE where offered, else every 60 s); Ctrl-C stops\n"


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("Bounces <bounces@icmpd.org>", "must be a bare address"),
        ("bounces+x@icmpd.org", "must not contain '+'"),
    ],
)
def test_a_bounce_address_that_cannot_carry_a_token_is_refused(workdir: Path, value: str, says: str) -> None:
    result = run_cli("config", cwd=workdir, env={"MAILER_BOUNCE_ADDRESS": value})
    assert result.exit_code == 1 and says in result.stderr and result.stderr.count("\n") == 1


def test_with_verp_on_a_bounce_without_a_token_is_matched_only_by_our_message_id(
    workdir: Path, env: dict[str, str], staff: Engine, smtp_server: SMTPServer
) -> None:
    """A relay that rewrites the envelope sender loses the token; our Message-ID still names the message."""
    mailer(workdir, env, "send", "issues/2016-02.yaml", "--list", "staff")
    settings = load_settings(ROOT / "mailer.toml", unsubscribe_secret=SECRET, bounce_address=BOUNCES)
    message = sent_to(smtp_server)["gone@example.org"]
    message.mail_from = BOUNCES
    summary = FetchSummary()
    assert process_bounce(staff, settings, dsn(message, "5.1.1", "550 User unknown", bounce_id="t1"), summary) == "hard"
    without_id = re.sub(rb"(?im)^Message-ID:.*\r\n", b"", dsn(message, "5.1.1", "550 x", bounce_id="t2"), count=1)
    without_ours = without_id.replace(b"Message-ID:", b"X-Was-Message-ID:")
    assert process_bounce(staff, settings, without_ours, summary) == "unmatched", "an address alone is no evidence"


# --- what an adversary tried --------------------------------------------------------------------


def plain_env(env: dict[str, str]) -> dict[str, str]:
    """The environment without bounce_address: bounces come back to the sender's address."""
    return {**env, "MAILER_BOUNCE_ADDRESS": ""}


def test_without_verp_an_address_without_our_message_id_suppresses_nobody(
    workdir: Path, env: dict[str, str], staff: Engine, smtp_server: SMTPServer, dovecot: DovecotServer
) -> None:
    assert mailer(workdir, plain_env(env), "send", "issues/2016-02.yaml", "--list", "staff")[0] == 3
    forged = (
        b"From: MAILER-DAEMON@evil.example\r\nTo: newsletter@icmpd.org\r\nSubject: failure notice\r\n"
        b"Message-ID: <f1@evil>\r\nX-Failed-Recipients: ana@example.org\r\n\r\n"
        b"<ana@example.org>:\r\n550 5.1.1 no such user\r\n"
    )
    dovecot.deliver(forged)
    genuine_without_id = re.sub(
        rb"(?im)^Message-ID: <[^>]*@icmpd\.org>\r\n",
        b"",
        dsn(sent_to(smtp_server)["gone@example.org"], "5.1.1", "550", bounce_id="g"),
    )
    dovecot.deliver(genuine_without_id)
    dovecot.deliver(dsn(sent_to(smtp_server)["gone@example.org"], "5.1.1", "550 User unknown", bounce_id="g2"))
    code, out, _ = mailer(workdir, plain_env(env), "bounces", "fetch")
    assert code == 0 and out.endswith("3 messages read: 1 hard, 2 unmatched; 1 address suppressed\n"), out
    assert set(suppressed(staff)) == {"nouser-1@example.org", "gone@example.org"}


def test_an_old_token_never_names_whoever_got_its_row_id_after_a_list_was_deleted(
    workdir: Path, env: dict[str, str], database_url: str, smtp_server: SMTPServer
) -> None:
    engine = open_database(database_url)
    for name, person in (("old", "ana@example.org"), ("new", "victim@example.org")):
        create_list(engine, name)
        add_subscriber(engine, name, person)
    mailer(workdir, env, "send", "issues/2016-02.yaml", "--list", "old")
    old = sent_to(smtp_server)["ana@example.org"]
    assert mailer(workdir, env, "lists", "delete", "old", "--yes", "--force")[0] == 0
    mailer(workdir, env, "send", "issues/2016-02.yaml", "--list", "new")
    settings = load_settings(ROOT / "mailer.toml", unsubscribe_secret=SECRET, bounce_address=BOUNCES)
    outcome = process_bounce(engine, settings, dsn(old, "5.1.1", "550 User unknown", bounce_id="late"), FetchSummary())
    assert outcome in ("forged", "unmatched") and suppressed(engine) == {}
    engine.dispose()


def test_nul_bytes_in_a_bounce_and_two_fetches_at_once_are_taken_in_stride(
    workdir: Path, env: dict[str, str], staff: Engine, smtp_server: SMTPServer, tmp_path: Path
) -> None:
    mailer(workdir, env, "send", "issues/2016-02.yaml", "--list", "staff")
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    bounces = [
        dsn(message, "5.1.1", "550 5.1.1 User\x00 unknown", bounce_id=f"n{address}")
        for address, message in sent_to(smtp_server).items()
    ]
    bounces.append(b"From: someone@example.org\r\nMessage-ID: <a\x00b@evil>\r\nSubject: hi\r\n\r\nhello\r\n")
    for number, raw in enumerate(bounces * 20):  # the same bounces many times over: each counts once
        (maildir / "new" / f"{number}.eml").write_bytes(raw)
    fetch_env = {**env, "MAILER_BOUNCE_MAILBOX": str(maildir), "PYTHONUNBUFFERED": "1"}
    children = [
        start_mailer("bounces", "fetch", cwd=workdir, env=fetch_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    results = [(child.communicate(timeout=120), child.returncode) for child in children]
    assert [code for _, code in results] == [0, 0], [err for (_, err), _ in results]
    with staff.connect() as conn:
        events = Counter(
            conn.execute(sa.select(delivery_events.c.email).where(delivery_events.c.kind == "hard")).scalars()
        )
    assert set(events.values()) == {1} and len(events) == 5, events  # nouser-1 was refused during the send


def test_a_lifted_suppression_starts_the_soft_bounce_count_again(
    workdir: Path, env: dict[str, str], staff: Engine, smtp_server: SMTPServer
) -> None:
    settings = load_settings(ROOT / "mailer.toml", unsubscribe_secret=SECRET, bounce_address=BOUNCES)
    text = (ROOT / "issues" / "2016-02.yaml").read_text(encoding="utf-8")
    for number in range(3, 7):
        (workdir / "issues" / f"2016-0{number}.yaml").write_text(
            text.replace("date: 2016-02-", f"date: 2016-0{number}-", 1)
        )
        smtp_server.recorder.messages.clear()
        mailer(workdir, env, "send", f"issues/2016-0{number}.yaml", "--list", "staff")
        raw = dsn(sent_to(smtp_server)["full@example.org"], "4.2.2", "452 Mailbox full", bounce_id=f"s{number}")
        process_bounce(staff, settings, raw, FetchSummary())
        if number == 5:
            assert suppressed(staff).get("full@example.org") == "bounced"
            assert mailer(workdir, env, "resubscribe", "full@example.org")[0] == 0
    assert "full@example.org" not in suppressed(staff), "one soft bounce after a fresh start is not three"


@pytest.mark.parametrize(
    ("mailbox", "says"),
    [("imaps://u@[::1/INBOX", "cannot read it as a URL"), ("mailer.toml", "not an mbox file")],
)
def test_a_mailbox_that_cannot_be_read_is_one_line(workdir: Path, env: dict[str, str], mailbox: str, says: str) -> None:
    code, _, err = mailer(workdir, {**env, "MAILER_BOUNCE_MAILBOX": mailbox}, "bounces", "fetch")
    assert code == 3 and says in err and err.count("\n") == 1, err


def test_a_nul_in_an_argument_is_one_line(workdir: Path, env: dict[str, str], staff: Engine) -> None:
    for args in (
        ["subscribers", "show", "a\x00b@example.org"],
        ["subscribers", "list", "staff", "--search", "\x00"],
        ["report", "\x00"],
    ):
        code, _, err = mailer(workdir, env, *args)
        assert code == 2 and "contains a NUL character" in err, err


def test_copies_of_a_bounce_without_a_message_id_count_once() -> None:
    from mailer.delivery.bounce_parse import parse_bounce

    body = b"From: MAILER-DAEMON@mx\r\nSubject: failure\r\n\r\n<a@example.org>: 550 no such user\r\n"
    copies = [body, b"Received: from relay\r\n" + body, body.replace(b"\r\n", b"\n")]
    assert len({parse_bounce(raw).message_id for raw in copies}) == 1
