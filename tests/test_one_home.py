"""One home per concept: each test here failed while the concept had two homes that disagreed."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import Engine

from mailer.audience.database import open_database
from mailer.audience.lists import (
    add_subscriber,
    create_list,
    find_subscriber_id,
    mailable_subscribers,
    remove_subscriber,
    unsubscribe,
)
from mailer.audience.subscriber_csv import import_subscribers
from mailer.cli import cli
from mailer.compose.build import WrittenFile
from mailer.compose.draft import last_issue
from mailer.compose.issues_folder import scan_issues
from mailer.compose.text import wrap
from mailer.delivery.send import dry_run, send_test, send_to_list
from mailer.settings import Settings
from mailer.web.archive import scan_archive
from mailer.web.preview import Previewer
from tests.conftest import ISSUES, ROOT, SECRET
from tests.smtp_server import SMTPServer

DECOMPOSED = "jose\u0301@example.org"  # "josé" typed with a combining accent, as some keyboards and PDFs give it
COMPOSED = "José@example.org"


@pytest.fixture
def folder_named_to_mislead(workdir: Path) -> Path:
    """atom.yaml sorts after 2016-02.yaml by name but holds the older 2015-10 issue."""
    shutil.copy(ISSUES / "2015-10.yaml", workdir / "issues" / "atom.yaml")
    return workdir / "issues"


def test_send_draft_archive_and_preview_agree_the_newest_issue_is_the_latest_date(
    folder_named_to_mislead: Path, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = folder_named_to_mislead
    assert scan_issues(folder).newest().slug == "2016-02"
    assert last_issue(folder).path.name == "2016-02.yaml"
    assert scan_archive(folder, settings).entries[0].slug == "2016-02"

    database = f"sqlite:///{tmp_path / 'lists.sqlite3'}"
    engine = open_database(database)
    create_list(engine, "staff")
    add_subscriber(engine, "staff", "ana@example.org")
    engine.dispose()
    monkeypatch.chdir(folder.parent)
    env = {
        "MAILER_DATABASE_URL": database,
        "MAILER_SENDER": "News <news@icmpd.org>",
        "MAILER_UNSUBSCRIBE_SECRET": SECRET,
    }
    result = CliRunner().invoke(cli, ["send", "--list", "staff", "--dry-run", "-o", "eml"], env=env)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "issue: issues/2016-02.yaml"
    [eml] = (folder.parent / "eml").iterdir()
    assert b"February 2016" in eml.read_bytes()


def test_send_without_a_file_refuses_to_guess_while_an_issue_file_is_broken(
    folder_named_to_mislead: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (folder_named_to_mislead / "2016-03.yaml").write_text(
        "title: March 2016 Monthly Update\ndate: 2016-03-10\n", encoding="utf-8"
    )
    monkeypatch.chdir(folder_named_to_mislead.parent)
    env = {"MAILER_DATABASE_URL": f"sqlite:///{tmp_path / 'lists.sqlite3'}", "MAILER_SENDER": "news@icmpd.org"}
    result = CliRunner().invoke(cli, ["send", "--list", "staff", "--yes"], env=env)
    assert (result.exit_code, result.output.splitlines()) == (
        1,
        [
            "issues/2016-03.yaml:1:1: preheader: required field is missing",
            "issues: cannot tell which issue to send to staff; fix the files above or name the issue file",
        ],
    )


@pytest.fixture
def staff(engine: Engine) -> Engine:
    create_list(engine, "staff")
    return engine


@pytest.mark.parametrize("typed_again", [DECOMPOSED, COMPOSED, "JOSÉ@EXAMPLE.ORG", f"  {DECOMPOSED} "])
def test_an_address_is_found_again_however_it_is_typed(staff: Engine, typed_again: str) -> None:
    assert add_subscriber(staff, "staff", DECOMPOSED) == "added"
    assert find_subscriber_id(staff, typed_again) is not None
    assert add_subscriber(staff, "staff", typed_again) == "unchanged"
    remove_subscriber(staff, "staff", typed_again)
    assert list(mailable_subscribers(staff, "staff")) == []


def test_unsubscribing_a_differently_typed_address_suppresses_the_stored_one(staff: Engine) -> None:
    add_subscriber(staff, "staff", COMPOSED)
    assert unsubscribe(staff, DECOMPOSED.upper()) == 1
    assert list(mailable_subscribers(staff, "staff")) == []


def _without_per_message_parts(message: bytes) -> bytes:
    """The bytes less what must differ between two messages: signature, Date, Message-ID, MIME boundary."""
    head, _, body = message.partition(b"\r\n\r\n")
    boundary = re.search(rb'boundary="([^"]+)"', head).group(1)  # type: ignore[union-attr]
    kept = re.sub(rb"(?m)^(DKIM-Signature|Date|Message-ID):.*\r\n(?:[ \t].*\r\n)*", b"", head + b"\r\n")
    return (kept + b"\r\n" + body).replace(boundary, b"BOUNDARY")


def test_the_dry_run_and_the_test_send_make_the_bytes_a_send_sends_signature_included(
    staff: Engine, send_settings: Settings, smtp_server: SMTPServer, dkim_key: tuple[Path, bytes], tmp_path: Path
) -> None:
    import dkim

    key_file, record = dkim_key
    settings = send_settings.model_copy(update={"dkim_key_file": key_file, "dkim_selector": "news2016"})
    add_subscriber(staff, "staff", "ana@example.org", name="Ana Alves")
    asyncio.run(dry_run(staff, settings, ISSUES / "2016-02.yaml", ["staff"], tmp_path / "eml"))
    asyncio.run(send_to_list(staff, settings, ISSUES / "2016-02.yaml", "staff"))
    asyncio.run(send_test(settings, ISSUES / "2016-02.yaml", "proofreader@example.org"))
    [written] = [path.read_bytes() for path in (tmp_path / "eml").iterdir()]
    [sent, test_send] = [item.data for item in smtp_server.recorder.messages]

    def dns(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == b"news2016._domainkey.icmpd.org." else None

    assert written.startswith(b"DKIM-Signature:") and dkim.verify(written, dnsfunc=dns)
    assert dkim.verify(sent, dnsfunc=dns) and dkim.verify(test_send, dnsfunc=dns)
    assert test_send.startswith(b"DKIM-Signature:")
    assert _without_per_message_parts(written) == _without_per_message_parts(sent)


def test_an_import_report_names_rows_even_when_the_path_has_a_colon(staff: Engine, tmp_path: Path) -> None:
    folder = tmp_path / "export 2016-02-01 10:30"
    folder.mkdir()
    csv_file = folder / "staff.csv"
    csv_file.write_text("email,name\nana@example.org,Ana\nnot-an-address,Bob\nana@example.org,Ana\n", encoding="utf-8")
    report = import_subscribers(staff, "staff", csv_file)
    assert report.lines() == [
        f"{csv_file}: 1 added, 0 updated, 0 unchanged, 1 invalid, 1 skipped",
        f"{csv_file}:3: invalid: not-an-address: An email address must have an @-sign.",
        f"{csv_file}:4: skipped: ana@example.org is a duplicate of line 2",
    ]


def test_wrapped_paragraphs_stay_apart() -> None:
    text = "First paragraph, long enough " * 4 + "\n\n  Second one.\n \nThird."
    wrapped = wrap(text, indent="  ")
    paragraphs = wrapped.split("\n\n")
    assert [p.split()[0] for p in paragraphs] == ["First", "Second", "Third."]
    assert all(len(line) <= 78 and line.startswith("  ") for line in wrapped.splitlines() if line)


def test_render_and_preview_give_the_same_size_warning(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    story = "    - title: A story\n      paragraphs:\n        - " + "Words that fill the email. " * 120 + "\n"
    big.write_text(
        "title: A long issue\ndate: 2016-03-10\npreheader: Long\nnews:\n  stories:\n" + story * 40, encoding="utf-8"
    )
    previewer = Previewer([big], config_file=ROOT / "mailer.toml")
    previewer.render_all()
    state = previewer.state("big")
    size = int(float(str(state["size_kb"])) * 1024)
    assert size > 102 * 1024
    assert state["size_warning"] == WrittenFile(tmp_path / "email.html", size, "email").warning
    assert "Gmail clips messages over 102 KB" in str(state["size_warning"])
