"""`mailer lists`, `mailer subscribers` and `mailer unsubscribe` as a user runs them."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import Result

from tests.cli_helpers import run_cli, start_mailer
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


def _read_position(process: subprocess.Popen[str], path: Path) -> int:
    """How far the child has read `path`: Linux shows each open file's offset in /proc."""
    fds = Path(f"/proc/{process.pid}/fd")
    for fd in fds.iterdir():
        try:
            if Path(os.readlink(fd)) == path:
                return int((fds.parent / "fdinfo" / fd.name).read_text().split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return 0


def test_an_import_killed_half_way_leaves_nothing_and_the_rerun_imports_all(  # type: ignore[no-untyped-def]
    run, tmp_path: Path, database_url: str
) -> None:
    run("lists", "create", "staff")
    people = tmp_path / "people.csv"
    rows = 60_000
    people.write_text("email,name\n" + "".join(f"person{i}@example.org,Person {i}\n" for i in range(rows)))
    size = people.stat().st_size
    process = start_mailer(
        "subscribers", "import", "staff", str(people), cwd=tmp_path, env={"MAILER_DATABASE_URL": database_url}
    )
    deadline = time.monotonic() + 60
    while _read_position(process, people) < size // 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, "the import finished before a third of the file was read: make the file longer"
    process.kill()
    process.wait()

    assert run("lists").stdout.splitlines()[1].split() == ["staff", "0", "0", "0"]
    assert run("subscribers", "export", "staff").stdout == "email,name\n"
    result = run("subscribers", "import", "staff", str(people))
    assert result.stdout.startswith(f"{people}: {rows} added, 0 updated, 0 unchanged, 0 invalid, 0 skipped")
