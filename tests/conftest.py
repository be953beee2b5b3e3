from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from mailer.compose.build import slug_of
from mailer.compose.load import load_issue
from mailer.compose.model import Issue
from mailer.compose.render import RenderedIssue, render_issue
from mailer.settings import Settings, load_settings
from tests.smtp_server import SMTPServer

ROOT = Path(__file__).resolve().parents[1]
ISSUES = ROOT / "issues"
SEED_ISSUES = ["2016-02", "2015-10"]
SEEDS = ROOT.parent / "shared" / "seeds"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", help="Rewrite tests/golden/ from the current output.")


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


def _postgres_reachable() -> str | None:
    try:
        import psycopg

        psycopg.connect("host=127.0.0.1 port=5432 dbname=test user=postgres", connect_timeout=3).close()
    except Exception as error:  # any failure means: skip, and say why
        return (
            f"PostgreSQL on 127.0.0.1:5432 is not reachable ({type(error).__name__}); storage tests ran on SQLite only"
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
        pytest.skip(reason)
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
