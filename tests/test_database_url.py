"""A database_url that cannot be used is one line naming it, with the password masked: never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli_helpers import run_cli
from tests.test_settings import project  # noqa: F401  # the same empty project folder, autouse

PASSWORD = "hunter2-Pa55"
USE_INSTEAD = "use sqlite:///path.sqlite3 or postgresql+psycopg://user@host/db"
NOT_A_HOST = (
    "a SQLite URL names a file, not a user or host: sqlite:///relative/path.sqlite3 or sqlite:////absolute/path.sqlite3"
)
BAD_PORT = "the port is not a number (an IPv6 host goes in brackets, [::1])"
IGNORED_OPTION = (
    "Query string argument(s) 'foo' are not accepted by the pysqlite driver and are being ignored; "
    "SQLite URI arguments require that 'uri=true' also be present in the URL."
)


def lists_with(url: str) -> str:
    """`mailer lists` with this database_url: exit code 1 and one line, without the password."""
    result = run_cli("lists", cwd=Path.cwd(), env={"MAILER_DATABASE_URL": url})
    assert (result.exit_code, result.stdout) == (1, ""), result.output
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert PASSWORD not in result.stderr
    return result.stderr.rstrip("\n")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            f"postgresql+psycopg://u:{PASSWORD}@h:abc/db",
            f"database_url: cannot parse 'postgresql+psycopg://u:********@h:abc/db': {BAD_PORT}",
        ),
        (
            f"postgresql+psycopg://u:{PASSWORD}@h:/db",
            f"database_url: cannot parse 'postgresql+psycopg://u:********@h:/db': {BAD_PORT}",
        ),
        (
            f"postgresql+psycopg://u:{PASSWORD}@h:5432:5433/db",
            f"database_url: cannot parse 'postgresql+psycopg://u:********@h:5432:5433/db': {BAD_PORT}",
        ),
        (
            f"postgresql+psycopg://u:{PASSWORD}@[::1/db",
            f"database_url: cannot parse 'postgresql+psycopg://u:********@[::1/db': {BAD_PORT}",
        ),
        (f"sqlite://u:{PASSWORD}@/x.sqlite3", f"database_url sqlite://u:********@/x.sqlite3: {NOT_A_HOST}"),
        ("sqlite://db.example.org/x.sqlite3", f"database_url sqlite://db.example.org/x.sqlite3: {NOT_A_HOST}"),
        (
            f"postgresql+psycopg://u:{PASSWORD}@h/db?port=abc",
            "database_url postgresql+psycopg://u:********@h/db?port=abc: Received non-integer port arguments: ('abc',)",
        ),
        (
            "sqlite:///x.sqlite3?timeout=soon",
            "database_url sqlite:///x.sqlite3?timeout=soon: could not convert string to float: 'soon'",
        ),
        (
            "sqlite:///x.sqlite3?check_same_thread=maybe",
            "database_url sqlite:///x.sqlite3?check_same_thread=maybe: String is not true/false: 'maybe'",
        ),
        ("sqlite:///x.sqlite3?foo=bar", f"database_url sqlite:///x.sqlite3?foo=bar: {IGNORED_OPTION}"),
        ("sqlite:///a%00b/x.sqlite3", "database_url sqlite:///a%00b/x.sqlite3: contains a NUL character (%00)"),
        (f"sqlite://u:{PASSWORD}@[zz]/x.sqlite3", f"database_url sqlite://u:********@[zz]/x.sqlite3: {NOT_A_HOST}"),
        (f"mysql://u:{PASSWORD}@h/db", f"database_url mysql://u:********@h/db: mysql is not supported; {USE_INSTEAD}"),
    ],
)
def test_an_odd_database_url_is_one_line_with_the_password_masked(url: str, message: str) -> None:
    assert lists_with(url) == message


def test_a_password_with_a_slash_is_masked_as_sqlalchemy_reads_it() -> None:
    """SQLAlchemy takes `ab/cd+ef==` (base64, say) for the password where urllib sees none."""
    assert lists_with(f"postgresql+psycopg://u:ab/{PASSWORD}@h:abc/db") == (
        f"database_url: cannot parse 'postgresql+psycopg://u:********@h:abc/db': {BAD_PORT}"
    )


def test_sqlite_options_the_driver_takes_still_work() -> None:
    result = run_cli("lists", cwd=Path.cwd(), env={"MAILER_DATABASE_URL": "sqlite:///x.sqlite3?timeout=5"})
    assert (result.exit_code, result.stderr) == (0, ""), result.output
    assert Path("x.sqlite3").is_file()
