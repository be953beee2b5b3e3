from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mailer.build import slug_of
from mailer.load import load_issue
from mailer.model import Issue
from mailer.render import RenderedIssue, render_issue
from mailer.settings import Settings, load_settings

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
