from __future__ import annotations

import base64
import functools
import os
import select
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, NoReturn

import pytest
from sqlalchemy.engine import Engine

from mailer.compose.issues_folder import slug_of
from mailer.compose.load import load_issue
from mailer.compose.model import Issue
from mailer.compose.render import RenderedIssue, render_issue
from mailer.settings import Settings, load_settings
from tests.smtp_server import SMTPServer

ROOT = Path(__file__).resolve().parents[1]
ISSUES = ROOT / "issues"
SEED_ISSUES = ["2016-02", "2015-10"]
SEEDS = ROOT.parent / "shared" / "seeds"


IN_CI = os.environ.get("CI") == "true"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="Rewrite tests/golden/ from the current output and skip the comparison; review the diff. Refused under CI=true.",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--update-golden") and IN_CI:
        raise pytest.UsageError(
            "--update-golden is refused under CI=true: golden files are refreshed on a workstation, "
            "reviewed in the diff and committed; CI only compares against them"
        )


def missing_service(reason: str) -> NoReturn:
    """Locally a test without its service skips and says why; under CI=true the same reason fails it."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a missing service is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def fail_process(process: subprocess.Popen[str], message: str) -> NoReturn:
    """Stop a child that did not do what was awaited, and fail with what it wrote to stderr."""
    process.kill()
    try:
        _, errors = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        errors = "(no stderr: the process did not end after SIGKILL)"
    pytest.fail(f"{message}\n--- stderr of {process.args!r}:\n{errors}", pytrace=False)


def read_line(process: subprocess.Popen[str], *, timeout: float, what: str) -> str:
    """The child's next stdout line within `timeout` seconds, or a failure saying so (a bare readline() can wait forever).

    Reads the pipe byte by byte, so nothing after the line is taken from a later communicate().
    """
    stream: IO[str] | None = process.stdout
    assert stream is not None, "start the process with stdout=subprocess.PIPE"
    fd = stream.fileno()
    deadline = time.monotonic() + timeout
    line = bytearray()
    while not line.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            fail_process(process, f"{what}: no complete line on stdout within {timeout:g} s (got {bytes(line)!r})")
        byte = os.read(fd, 1)
        if not byte:
            fail_process(process, f"{what}: the process ended (exit code {process.poll()}) after {bytes(line)!r}")
        line += byte
    return line.decode()


def wait_until(
    condition: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    child: subprocess.Popen[str] | None = None,
) -> None:
    """Poll `condition` until it holds; fail with `what` after `timeout` seconds, or as soon as `child` ends."""
    deadline = time.monotonic() + timeout
    while not condition():
        if child is not None and child.poll() is not None:
            fail_process(child, f"{what}: the process ended first (exit code {child.returncode})")
        if time.monotonic() >= deadline:
            if child is not None:
                fail_process(child, f"{what}: not within {timeout:g} s")
            pytest.fail(f"{what}: not within {timeout:g} s", pytrace=False)
        time.sleep(interval)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings(ROOT / "mailer.toml")


@pytest.fixture(scope="session")
def seed_issues() -> dict[str, Issue]:
    return {slug: load_issue(ISSUES / f"{slug}.yaml") for slug in SEED_ISSUES}


@pytest.fixture(scope="session")
def rendered(seed_issues: dict[str, Issue], settings: Settings) -> dict[str, RenderedIssue]:
    return {slug: render_issue(issue, slug, settings) for slug, issue in seed_issues.items()}


@pytest.fixture(params=SEED_ISSUES)
def seed(
    request: pytest.FixtureRequest, seed_issues: dict[str, Issue], rendered: dict[str, RenderedIssue]
) -> tuple[Issue, RenderedIssue]:
    return seed_issues[request.param], rendered[request.param]


@pytest.fixture
def write_issue(tmp_path: Path) -> Callable[[str, str], Path]:
    def write(text: str, name: str = "issue.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


MINIMAL = """\
title: March 2016 Monthly Update
date: 2016-03-10
preheader: What happened in March
news:
  stories:
    - title: A story
      paragraphs:
        - The first paragraph.
"""


def render_slug(path: Path, settings: Settings) -> RenderedIssue:
    return render_issue(load_issue(path), slug_of(path), settings)


PG_DSN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@functools.cache
def _postgres_reachable() -> str | None:
    """Probed once per session: a server that is down costs one connect timeout, not one per test."""
    try:
        import psycopg

        psycopg.connect("host=127.0.0.1 port=5432 dbname=test user=postgres", connect_timeout=3).close()
    except Exception as error:  # any failure means: skip (fail under CI=true), and say why
        why = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return (
            f"PostgreSQL on 127.0.0.1:5432 (database test, user postgres, trust auth) is not reachable: {why}; "
            "storage tests ran on SQLite only (README, Running the tests: how to get PostgreSQL)"
        )
    return None


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a schema of its own on the local PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'mailer.sqlite3'}"
        return
    reason = _postgres_reachable()
    if reason:
        missing_service(reason)
    import psycopg

    schema = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect("host=127.0.0.1 port=5432 dbname=test user=postgres", autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_DSN}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect("host=127.0.0.1 port=5432 dbname=test user=postgres", autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    from mailer.audience.database import open_database

    engine = open_database(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A content repository as users have one: mailer.toml and the real issues/, in a temp dir."""
    shutil.copy(ROOT / "mailer.toml", tmp_path / "mailer.toml")
    shutil.copytree(ROOT / "issues", tmp_path / "issues")
    return tmp_path


@pytest.fixture
def smtp_server() -> Iterator[SMTPServer]:
    with SMTPServer() as server:
        yield server


SECRET = "s" * 40


@pytest.fixture
def send_settings(smtp_server: SMTPServer, database_url: str) -> Settings:
    """Settings for sending to the test server: plain SMTP on localhost, the test database."""
    return load_settings(
        ROOT / "mailer.toml",
        smtp_host="127.0.0.1",
        smtp_port=smtp_server.port,
        smtp_tls="none",
        sender="ICMPD Newsletter <newsletter@icmpd.org>",
        unsubscribe_secret=SECRET,
        database_url=database_url,
        retry_base_delay=0.05,
        smtp_pool_size=4,
        smtp_timeout=5,
    )


def send_environment(settings: Settings, smtp_server: SMTPServer) -> dict[str, str]:
    """The MAILER_* variables of `send_settings`, for `mailer send` run through the CLI or as a process."""
    return {
        "MAILER_DATABASE_URL": settings.database_url,
        "MAILER_SMTP_HOST": "127.0.0.1",
        "MAILER_SMTP_PORT": str(smtp_server.port),
        "MAILER_SMTP_TLS": "none",
        "MAILER_SENDER": "ICMPD Newsletter <newsletter@icmpd.org>",
        "MAILER_UNSUBSCRIBE_SECRET": SECRET,
        "MAILER_SMTP_POOL_SIZE": "4",
        "MAILER_RETRY_BASE_DELAY": "0.05",
        "MAILER_CLAIM_LEASE_SECONDS": "5",  # a killed PostgreSQL sender's rows are taken over after 5 s
    }


@pytest.fixture
def dkim_key(tmp_path: Path) -> tuple[Path, bytes]:
    """A fresh 2048-bit RSA key file and the DNS TXT record that publishes its public half."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key_file, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
