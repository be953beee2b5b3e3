"""Never send or publish the wrong thing: drafts, dates to come, the issue chosen for you, test sends.

Every test goes through the real CLI (in process, or as a child process where a terminal matters)
against the aiosmtpd server of `smtp_server` and the SQLite and PostgreSQL databases of `database_url`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mailer.audience.database import deliveries, open_database
from mailer.audience.lists import add_subscriber, create_list, remove_subscriber
from mailer.delivery.send import SendSummary, send_to_lists
from mailer.errors import ExitStatus
from mailer.settings import Settings
from tests.cli_helpers import run_cli
from tests.conftest import MINIMAL, ROOT, fail_process, send_environment
from tests.smtp_server import SMTPServer, free_port
from tests.test_public_web import PublicServer

LATER = (dt.date.today() + dt.timedelta(days=30)).isoformat()


def write_issue(workdir: Path, slug: str, *, date: str, status: str | None = None, title: str | None = None) -> Path:
    text = MINIMAL.replace("date: 2016-03-10", f"date: {date}")
    if title:
        text = text.replace("title: March 2016 Monthly Update", f"title: {title}")
    if status:
        text += f"status: {status}\n"
    path = workdir / "issues" / f"{slug}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def ledger_rows(engine: Engine, issue: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).where(deliveries.c.issue == issue)).scalar_one())


def received(smtp_server: SMTPServer) -> list[EmailMessage]:
    return [
        email.message_from_bytes(message.data, policy=email.policy.default) for message in smtp_server.recorder.messages
    ]


@pytest.fixture
def staff(send_settings: Settings) -> Iterator[Engine]:
    engine = open_database(send_settings.database_url)
    create_list(engine, "staff", "All staff")
    add_subscriber(engine, "staff", "ana@example.org", name="Ana")
    add_subscriber(engine, "staff", "bob@example.org", name="Bob")
    yield engine
    engine.dispose()


@pytest.fixture
def env(send_settings: Settings, smtp_server: SMTPServer) -> dict[str, str | None]:
    return {**send_environment(send_settings, smtp_server), "MAILER_SMTP_POOL_SIZE": "2"}


# --- drafts -----------------------------------------------------------------------------------------


def test_a_draft_is_refused_by_a_list_send_but_test_sends_and_dry_runs_work(
    workdir: Path, staff: Engine, env: dict[str, str | None], smtp_server: SMTPServer
) -> None:
    write_issue(workdir, "2016-03", date="2016-03-10", status="draft")

    refused = run_cli("send", "issues/2016-03.yaml", "--list", "staff", "--yes", cwd=workdir, env=env)
    assert refused.exit_code == ExitStatus.INVALID_INPUT
    assert refused.stderr == (
        "issues/2016-03.yaml: status: draft; a draft goes only to test addresses (--to) and --dry-run. "
        "When it is ready, set status: ready in the file and send again\n"
    )
    forced = run_cli("send", "issues/2016-03.yaml", "--list", "staff", "--force", cwd=workdir, env=env)
    assert forced.exit_code == ExitStatus.INVALID_INPUT  # --force is about dates; a draft needs its file changed
    assert ledger_rows(staff, "2016-03") == 0

    test = run_cli("send", "issues/2016-03.yaml", "--to", "me@example.org", cwd=workdir, env=env)
    assert test.exit_code == 0, test.stderr
    dry = run_cli("send", "issues/2016-03.yaml", "--list", "staff", "--dry-run", "-o", "eml", cwd=workdir, env=env)
    assert (dry.exit_code, dry.stdout) == (0, "dry run: wrote 2 messages to eml/; nothing was sent\n")
    assert len(list((workdir / "eml").iterdir())) == 2
    assert smtp_server.recorder.delivered() == {"me@example.org": 1}
    assert ledger_rows(staff, "2016-03") == 0

    (workdir / "issues" / "2016-03.yaml").write_text(
        (workdir / "issues" / "2016-03.yaml").read_text().replace("status: draft", "status: ready")
    )
    sent = run_cli("send", "issues/2016-03.yaml", "--list", "staff", cwd=workdir, env=env)
    assert sent.exit_code == 0, sent.stderr
    assert smtp_server.recorder.delivered() == {"me@example.org": 1, "ana@example.org": 1, "bob@example.org": 1}


def test_drafts_and_later_dates_stay_off_the_published_site_until_sent(
    workdir: Path, staff: Engine, env: dict[str, str | None]
) -> None:
    write_issue(workdir, "2016-03", date="2016-03-10", status="draft", title="Draft March")
    write_issue(workdir, "2099-01", date=LATER, title="Later January")

    result = run_cli("publish", "-o", "site", cwd=workdir, env=env)
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines() == [
        "issues/2016-03.yaml: status: draft; not published",
        f"issues/2099-01.yaml: dated {LATER}; published from that day",
    ]
    site = workdir / "site"
    assert sorted(path.name for path in site.iterdir() if path.is_dir()) == ["2015-10", "2016-02"]
    for page in ("index.html", "feed.xml"):
        text = (site / page).read_text(encoding="utf-8")
        assert "Draft March" not in text and "Later January" not in text
        assert "February 2016 Monthly Update" in text

    later = run_cli("send", "issues/2099-01.yaml", "--list", "staff", cwd=workdir, env=env)
    assert later.exit_code == ExitStatus.INVALID_INPUT
    assert later.stderr == (
        f'issues/2099-01.yaml: dated {LATER}, after today: its web version (the "view in browser" link) '
        "is not published until then; send it on or after that day, or pass --force to send it now "
        "(sending publishes it at once)\n"
    )
    assert ledger_rows(staff, "2099-01") == 0
    forced = run_cli("send", "issues/2099-01.yaml", "--list", "staff", "--force", cwd=workdir, env=env)
    assert forced.exit_code == 0, forced.stderr

    again = run_cli("publish", "-o", "site", cwd=workdir, env=env)
    assert again.exit_code == 0, again.stderr
    assert again.stderr.splitlines() == ["issues/2016-03.yaml: status: draft; not published"]
    assert "Later January" in (site / "2099-01" / "index.html").read_text(encoding="utf-8")
    assert "Later January" in (site / "feed.xml").read_text(encoding="utf-8")


def test_the_served_archive_hides_drafts_and_later_dates_until_sent_and_logs_broken_files(
    workdir: Path, staff: Engine, env: dict[str, str | None]
) -> None:
    write_issue(workdir, "2016-03", date="2016-03-10", status="draft", title="Draft March")
    write_issue(workdir, "2099-01", date=LATER, title="Later January")
    (workdir / "issues" / "2016-04.yaml").write_text("title: April\ndate: 2016-04-10\n", encoding="utf-8")
    server = PublicServer(workdir, {k: v for k, v in env.items() if v is not None})
    try:
        index = httpx.get(f"{server.url}/", timeout=10).text
        feed = httpx.get(f"{server.url}/feed.xml", timeout=10).text
        for text in (index, feed):
            assert "February 2016 Monthly Update" in text
            assert "Draft March" not in text and "Later January" not in text and "April" not in text
        for slug in ("2016-03", "2099-01", "2016-04"):
            assert httpx.get(f"{server.url}/{slug}/", timeout=10).status_code == 404, slug

        forced = run_cli(
            "send", "issues/2099-01.yaml", "--list", "staff", "--force", cwd=workdir, env={**env, **server.env}
        )
        assert forced.exit_code == 0, forced.stderr
        web = httpx.get(f"{server.url}/2099-01/", timeout=10)
        assert web.status_code == 200 and "Later January" in web.text
        assert "Later January" in httpx.get(f"{server.url}/", timeout=10).text
    finally:
        log = server.stop()
    # the broken file is left out with the same lines mailer publish prints, once, naming file:line
    assert "issues/2016-04.yaml:1:1: preheader: required field is missing" in log
    assert log.count("issues/2016-04.yaml: left out of the archive until it is valid") == 1


def test_the_draft_mailer_writes_is_a_draft(workdir: Path) -> None:
    feed = ROOT / "tests" / "feeds" / "icmpd.xml"
    if not feed.is_file():
        feed = next((ROOT / "tests" / "feeds").glob("*.xml"))
    result = run_cli("draft", "--feed", str(feed), "--since", "2000-01-01", "-o", "issues/2099-02.yaml", cwd=workdir)
    assert result.exit_code == 0, result.stderr
    text = (workdir / "issues" / "2099-02.yaml").read_text(encoding="utf-8")
    assert "\nstatus: draft\n" in text
    check = run_cli("check", "issues/2099-02.yaml", cwd=workdir)
    assert (check.exit_code, check.stdout) == (0, "1 issue file OK\n")


# --- the issue chosen for you -------------------------------------------------------------------------


def test_send_without_a_file_picks_the_newest_ready_issue_not_yet_sent_to_that_list(
    workdir: Path, staff: Engine, env: dict[str, str | None], smtp_server: SMTPServer
) -> None:
    write_issue(workdir, "a-later-draft", date="2016-05-01", status="draft", title="Draft May")
    first = run_cli("send", "--list", "staff", "--yes", cwd=workdir, env=env)
    assert first.exit_code == 0, first.stderr
    assert first.stdout.splitlines()[0] == "issue: issues/2016-02.yaml"

    nothing = run_cli("send", "--list", "staff", "--yes", cwd=workdir, env=env)
    assert nothing.exit_code == ExitStatus.INVALID_INPUT
    assert nothing.stderr == (
        "nothing new to send to staff: the last issue it was sent is 2016-02 'February 2016 Monthly Update' "
        "(a-later-draft: status: draft); name an issue file to send another\n"
    )
    # newest by the date inside the file, not by file name
    write_issue(workdir, "zz-march", date="2016-03-10", title="March by date")
    write_issue(workdir, "aa-april", date="2016-04-10", title="April by date")
    picked = run_cli("send", "--list", "staff", "--yes", cwd=workdir, env=env)
    assert picked.exit_code == 0, picked.stderr
    assert picked.stdout.splitlines()[0] == "issue: issues/aa-april.yaml"
    # the list missed March; sending it now is a decision made by naming it, never a guess
    after = run_cli("send", "--list", "staff", "--yes", cwd=workdir, env=env)
    assert after.exit_code == ExitStatus.INVALID_INPUT
    assert "the last issue it was sent is aa-april 'April by date'" in after.stderr
    subjects = [str(message["Subject"]) for message in received(smtp_server)]
    assert len(subjects) == 4 and subjects.count("April by date") == 2
    assert "Draft May" not in subjects and "March by date" not in subjects


def _ask(workdir: Path, env: dict[str, str | None], answer: str) -> tuple[int, str]:
    """`mailer send --list staff` at a terminal: stdin is a pty, the answer typed into it."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "mailer", "send", "--list", "staff"],
        cwd=workdir,
        env={**os.environ, **{k: v for k, v in env.items() if v is not None}},
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
            fail_process(process, "mailer send at a terminal: still running after 60 s")
    finally:
        os.close(controller)
    return process.returncode, output


def test_send_without_a_file_asks_first_at_a_terminal_counting_only_who_has_not_had_it(
    workdir: Path, staff: Engine, env: dict[str, str | None], smtp_server: SMTPServer
) -> None:
    add_subscriber(staff, "staff", "cy@example.org")
    create_list(staff, "partners")
    add_subscriber(staff, "partners", "ana@example.org")
    partners = run_cli("send", "issues/2016-02.yaml", "--list", "partners", cwd=workdir, env=env)
    assert partners.exit_code == 0, partners.stderr

    code, output = _ask(workdir, env, "n")
    assert code == 1
    assert "Send 2016-02 'February 2016 Monthly Update' to staff (2 recipients)? [y/N]" in output  # ana had it
    assert "Aborted" in output
    assert smtp_server.recorder.delivered() == {"ana@example.org": 1}

    code, output = _ask(workdir, env, "y")
    assert code == 0, output
    assert smtp_server.recorder.delivered() == {"ana@example.org": 1, "bob@example.org": 1, "cy@example.org": 1}

    piped = run_cli("send", "--list", "staff", cwd=workdir, env=env)  # not a terminal, no --yes: never sends
    assert piped.exit_code == ExitStatus.INVALID_INPUT


# --- test sends ---------------------------------------------------------------------------------------


def test_to_without_a_file_proofreads_the_newest_issue_even_a_draft(
    workdir: Path, env: dict[str, str | None], smtp_server: SMTPServer
) -> None:
    write_issue(workdir, "2016-03", date="2016-03-10", status="draft", title="Draft March")
    result = run_cli("send", "--to", "me@example.org", cwd=workdir, env=env)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[0] == "issue: issues/2016-03.yaml (2016-03 'Draft March')"
    assert [str(message["Subject"]) for message in received(smtp_server)] == ["Draft March"]


def test_to_repeats_one_message_each_addressed_to_that_address_alone(
    workdir: Path, env: dict[str, str | None], smtp_server: SMTPServer
) -> None:
    result = run_cli(
        "send", "issues/2016-02.yaml", "--to", "me@example.org", "--to", "Editor@Example.org", cwd=workdir, env=env
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == ["me@example.org: 250 2.0.0 queued", "Editor@example.org: 250 2.0.0 queued"]
    assert [message.recipients for message in smtp_server.recorder.messages] == [
        ["me@example.org"],
        ["Editor@example.org"],
    ]
    assert [str(message["To"]) for message in received(smtp_server)] == ["me@example.org", "Editor@example.org"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("me@example.org,you@example.org", "one address per --to; repeat it for each"),
        ("me@example.org; you@example.org", "one address per --to; repeat it for each"),
        ("me@", "is not a valid address"),
        ("me@intranet.local", "special_use_domains"),
    ],
)
def test_to_refuses_what_an_import_would_refuse_and_sends_nothing(
    workdir: Path, env: dict[str, str | None], smtp_server: SMTPServer, value: str, expected: str
) -> None:
    result = run_cli("send", "issues/2016-02.yaml", "--to", "ok@example.org", "--to", value, cwd=workdir, env=env)
    assert result.exit_code == ExitStatus.USAGE
    assert expected in result.stderr and "--to" in result.stderr
    assert smtp_server.recorder.messages == []


# --- consistent edges ---------------------------------------------------------------------------------


def test_usage_mistakes_exit_2_and_a_missing_file_exits_1(workdir: Path, smtp_server: SMTPServer) -> None:
    for extra in (["--list", "staff"], ["--dry-run"]):
        mixed = run_cli("send", "issues/2016-02.yaml", "--to", "me@example.org", *extra, cwd=workdir)
        assert mixed.exit_code == ExitStatus.USAGE, extra
    assert smtp_server.recorder.messages == []

    render = run_cli("render", "issues/2016-02.yaml", "issues/2015-10.yaml", "-o", "out", cwd=workdir)
    assert render.exit_code == ExitStatus.USAGE
    assert render.stderr == "-o/--output names the folder of one issue; render several issues without it\n"
    assert not (workdir / "out").exists()

    status = run_cli("status", "issues/2099-12.yaml", cwd=workdir)
    assert (status.exit_code, status.stderr) == (ExitStatus.INVALID_INPUT, "issues/2099-12.yaml: no such file\n")


def test_publish_writes_by_default_where_git_ignores_it(workdir: Path) -> None:
    result = run_cli("publish", cwd=workdir)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "published 2 issues to build/site/ for https://newsletter.icmpd.org"
    index = workdir / "build" / "site" / "index.html"
    assert index.is_file()
    ignored = subprocess.run(
        ["git", "-C", str(ROOT), "check-ignore", "--no-index", "-q", "build/site/index.html"], check=False
    )
    assert ignored.returncode == 0, "the repository's .gitignore does not cover mailer publish's default folder"


# --- found by trying to break it ----------------------------------------------------------------------


def test_every_list_of_a_send_gets_the_version_checked_before_the_first(
    workdir: Path, staff: Engine, send_settings: Settings, smtp_server: SMTPServer
) -> None:
    create_list(staff, "partners")
    add_subscriber(staff, "partners", "cy@example.org")
    issue = write_issue(workdir, "2016-03", date="2016-03-10", title="As checked")

    def edit_after_the_first_list(summary: SendSummary) -> None:
        issue.write_text(issue.read_text().replace("As checked", "Edited later") + "status: draft\n")

    settings = send_settings.model_copy(update={"issues_dir": workdir / "issues"})
    summaries = asyncio.run(
        send_to_lists(staff, settings, issue, ["staff", "partners"], finished=edit_after_the_first_list)
    )
    assert [summary.sent for summary in summaries] == [2, 1]
    assert [str(message["Subject"]) for message in received(smtp_server)] == ["As checked"] * 3


def test_an_unknown_list_anywhere_on_the_line_stops_the_send_before_the_first_message(
    workdir: Path, staff: Engine, env: dict[str, str | None], smtp_server: SMTPServer
) -> None:
    result = run_cli("send", "issues/2016-02.yaml", "--list", "staff", "--list", "staf", cwd=workdir, env=env)
    assert (result.exit_code, result.stderr) == (
        ExitStatus.INVALID_INPUT,
        "unknown list 'staf'; did you mean 'staff'?\n",
    )
    assert smtp_server.recorder.messages == [] and ledger_rows(staff, "2016-02") == 0


@pytest.mark.parametrize("place", ["elsewhere/2016-03.yaml", "issues/2016-03.yml"])
def test_a_file_the_archive_would_not_publish_is_not_sent_to_a_list(
    workdir: Path, staff: Engine, env: dict[str, str | None], smtp_server: SMTPServer, place: str
) -> None:
    path = workdir / place
    path.parent.mkdir(exist_ok=True)
    path.write_text(MINIMAL, encoding="utf-8")
    refused = run_cli("send", place, "--list", "staff", cwd=workdir, env=env)
    assert refused.exit_code == ExitStatus.INVALID_INPUT
    assert refused.stderr.startswith(f"{place}: not one of the issue files in issues/ (NAME.yaml)")
    assert smtp_server.recorder.messages == []
    assert run_cli("send", place, "--to", "me@example.org", cwd=workdir, env=env).exit_code == 0


def test_send_without_a_file_resumes_a_send_that_did_not_finish(
    workdir: Path, staff: Engine, env: dict[str, str | None], smtp_server: SMTPServer
) -> None:
    closed = {**env, "MAILER_SMTP_PORT": str(free_port())}
    stopped = run_cli("send", "--list", "staff", "--yes", cwd=workdir, env=closed)
    assert stopped.exit_code == ExitStatus.DELIVERY_FAILED
    assert ledger_rows(staff, "2016-02") == 2 and smtp_server.recorder.messages == []

    resumed = run_cli("send", "--list", "staff", "--yes", cwd=workdir, env=env)
    assert resumed.exit_code == 0, resumed.stderr
    assert resumed.stdout.splitlines()[0] == "issue: issues/2016-02.yaml (resuming the send that did not finish)"
    assert smtp_server.recorder.delivered() == {"ana@example.org": 1, "bob@example.org": 1}


def test_send_without_a_file_passes_over_a_later_date_unless_forced(
    workdir: Path, staff: Engine, env: dict[str, str | None], smtp_server: SMTPServer
) -> None:
    assert run_cli("send", "issues/2016-02.yaml", "--list", "staff", cwd=workdir, env=env).exit_code == 0
    write_issue(workdir, "2099-01", date=LATER, title="Later January")
    write_issue(workdir, "2016-03", date="2016-03-10", title="March")
    due = run_cli("send", "--list", "staff", "--yes", cwd=workdir, env=env)
    assert due.exit_code == 0, due.stderr
    assert due.stdout.splitlines()[0] == "issue: issues/2016-03.yaml"

    waiting = run_cli("send", "--list", "staff", "--yes", cwd=workdir, env=env)
    assert waiting.exit_code == ExitStatus.INVALID_INPUT
    assert waiting.stderr == (
        "nothing new to send to staff: the last issue it was sent is 2016-03 'March' "
        f"(2099-01: dated {LATER}, --force sends it now); name an issue file to send another\n"
    )
    forced = run_cli("send", "--list", "staff", "--yes", "--force", cwd=workdir, env=env)
    assert forced.exit_code == 0, forced.stderr
    assert forced.stdout.splitlines()[0] == "issue: issues/2099-01.yaml"


def test_a_dry_run_replaces_what_an_earlier_dry_run_wrote(
    workdir: Path, staff: Engine, env: dict[str, str | None]
) -> None:
    (workdir / "eml").mkdir()
    (workdir / "eml" / "notes.txt").write_text("mine", encoding="utf-8")
    assert run_cli("send", "issues/2016-02.yaml", "--list", "staff", "--dry-run", "-o", "eml", cwd=workdir, env=env)
    remove_subscriber(staff, "staff", "bob@example.org")
    again = run_cli("send", "issues/2016-02.yaml", "--list", "staff", "--dry-run", "-o", "eml", cwd=workdir, env=env)
    assert again.stdout == "dry run: wrote 1 message to eml/; nothing was sent\n"
    assert sorted(path.name for path in (workdir / "eml").iterdir()) == ["000001-ana@example.org.eml", "notes.txt"]


def test_to_takes_no_list_flags_and_mails_a_repeated_address_once(
    workdir: Path, env: dict[str, str | None], smtp_server: SMTPServer
) -> None:
    for flag in ("--retry-failed", "--retry-uncertain", "--yes"):
        mixed = run_cli("send", "issues/2016-02.yaml", "--to", "me@example.org", flag, cwd=workdir, env=env)
        assert mixed.exit_code == ExitStatus.USAGE, flag
        assert f"{flag}: for sends to a list; --to sends test messages" in mixed.stderr
    twice = run_cli(
        "send", "issues/2016-02.yaml", "--to", "me@example.org", "--to", "ME@example.org", cwd=workdir, env=env
    )
    assert twice.exit_code == 0, twice.stderr
    assert len(smtp_server.recorder.messages) == 1


def test_a_test_send_that_cannot_be_delivered_exits_3(workdir: Path, env: dict[str, str | None]) -> None:
    closed = {**env, "MAILER_SMTP_PORT": str(free_port())}
    result = run_cli("send", "issues/2016-02.yaml", "--to", "me@example.org", cwd=workdir, env=closed)
    assert result.exit_code == ExitStatus.DELIVERY_FAILED, result.stderr
