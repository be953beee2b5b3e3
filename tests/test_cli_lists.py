"""`mailer lists`, `mailer subscribers` and `mailer unsubscribe` as a user runs them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import Result

from tests.cli_helpers import run_cli
from tests.conftest import ROOT


@pytest.fixture
def run(tmp_path: Path, database_url: str):  # type: ignore[no-untyped-def]
    shutil.copy(ROOT / "mailer.toml", tmp_path / "mailer.toml")

    def mailer(*args: str) -> Result:
        return run_cli(*args, cwd=tmp_path, env={"MAILER_DATABASE_URL": database_url})

    return mailer


def test_list_and_subscriber_round_trip(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert run("lists").stdout == "no lists yet; create one with: mailer lists create NAME --description TEXT\n"
    assert run("lists", "create", "staff", "--description", "All staff").stdout == "created list 'staff'\n"
    result = run("lists", "create", "staff")
    assert (result.exit_code, result.stderr) == (1, "list 'staff' already exists\n")

    assert run("subscribers", "add", "staff", "ana@example.org", "--name", "Ana", "--attr", "Language=pt").stdout == (
        "ana@example.org: added on 'staff'\n"
    )
    (tmp_path / "staff.csv").write_text("email;name\nbob@example.org;Bob\nnot-an-email;X\n")
    result = run("subscribers", "import", "staff", "staff.csv", "--dry-run")
    assert result.exit_code == 1  # one invalid row
    assert (
        result.stdout
        == "staff.csv: 1 added, 0 updated, 0 unchanged, 1 invalid, 0 skipped\ndry run: nothing was written\n"
    )
    assert result.stderr == "staff.csv:3: invalid: not-an-email: An email address must have an @-sign.\n"
    assert run("subscribers", "import", "staff", "staff.csv").stdout.startswith("staff.csv: 1 added,")

    assert run("lists").stdout == (
        "NAME   SUBSCRIBED  UNSUBSCRIBED  SUPPRESSED  DESCRIPTION\nstaff           2             0           0  All staff\n"
    )
    assert (
        run("subscribers", "export", "staff").stdout
        == "email,name,language\nana@example.org,Ana,pt\nbob@example.org,Bob,\n"
    )

    assert (
        run("unsubscribe", "BOB@example.org").stdout
        == "BOB@example.org: suppressed (unsubscribed); unsubscribed from 1 list\n"
    )
    assert run("subscribers", "export", "staff").stdout == "email,name,language\nana@example.org,Ana,pt\n"
    result = run("subscribers", "add", "staff", "bob@example.org")
    assert (result.exit_code, result.stderr) == (
        1,
        "bob@example.org is suppressed (unsubscribed) and is never mailed; it was not subscribed\n",
    )

    assert run("subscribers", "remove", "staff", "ana@example.org").stdout == "ana@example.org: removed from 'staff'\n"
    result = run("subscribers", "export", "press")
    assert (result.exit_code, result.stderr) == (1, "unknown list 'press'; known lists: staff\n")


def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    result = run_cli("lists", cwd=tmp_path, env={"MAILER_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none"})
    assert result.exit_code == 1
    assert result.stderr.startswith("database postgresql+psycopg://nobody@127.0.0.1:1/none: connection failed")
    assert len(result.stderr.splitlines()) == 1
