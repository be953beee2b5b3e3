"""The plain-text alternative as a reader sees it: `mailer render` on the seed issues, then build/<issue>/email.txt."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mailer.compose.load import load_issue
from mailer.compose.model import Issue
from mailer.settings import load_settings
from tests.cli_helpers import run_cli
from tests.conftest import SEED_ISSUES

WIDTH = 78
_RULE = re.compile(r"^(=+|-+)$")
_BARE_URL = re.compile(r"^<?(https?://|mailto:)\S+?>?$")


def render_text(workdir: Path, slug: str) -> str:
    result = run_cli("render", f"issues/{slug}.yaml", cwd=workdir)
    assert result.exit_code == 0, result.output
    return (workdir / "build" / slug / "email.txt").read_text(encoding="utf-8")


def one_line(text: str) -> str:
    return " ".join(text.split())


def headings(text: str) -> list[tuple[str, str]]:
    """(text, rule character) for every heading: lines of text directly over a rule exactly as wide as they are."""
    lines = text.splitlines()
    found: list[tuple[str, str]] = []
    for number, line in enumerate(lines):
        if not _RULE.match(line) or number == 0 or not lines[number - 1].strip():
            continue
        start = number
        while start > 0 and lines[start - 1].strip() and not _RULE.match(lines[start - 1]):
            start -= 1
        block = lines[start:number]
        assert len(line) == max(len(row) for row in block), f"rule not as wide as its heading: {block!r} / {line!r}"
        found.append((" ".join(block), line[0]))
    return found


def expected_headings(issue: Issue, links_heading: str) -> tuple[list[str], list[str]]:
    """Sections (ruled with `=`) and stories and publications (ruled with `-`), in reading order."""
    sections: list[str] = [issue.title]
    stories: list[str] = []
    if issue.spotlight:
        sections.append(f"{issue.spotlight.heading}: {issue.spotlight.headline}")  # the seeds' own line
        stories += [story.title for story in issue.spotlight.stories]
    for section in (issue.news, issue.other_news):
        if section:
            sections.append(section.heading or "News")
            stories += [story.title for story in section.stories]
    if issue.publications:
        sections.append(issue.publications.heading)
        stories += [f"{item.kind}: {item.title}" if item.kind else item.title for item in issue.publications.items]
    if issue.events:
        sections.append(issue.events.heading)
    sections.append(links_heading)
    return sections, stories


@pytest.mark.parametrize("slug", SEED_ISSUES)
def test_one_heading_style_for_title_sections_stories_and_publications(workdir: Path, slug: str) -> None:
    text = render_text(workdir, slug)
    issue = load_issue(workdir / "issues" / f"{slug}.yaml")
    sections, stories = expected_headings(issue, load_settings(workdir / "mailer.toml").branding.links_heading)

    found = headings(text)
    assert [heading for heading, rule in found if rule == "="] == sections
    assert [heading for heading, rule in found if rule == "-"] == stories
    assert text.splitlines()[:2] == [issue.title, "=" * len(issue.title)], "the title heads the text"
    assert not [line for line in text.splitlines() if line.lstrip().startswith("#")], "no Markdown headings"


@pytest.mark.parametrize("slug", SEED_ISSUES)
def test_labels_are_not_doubled(workdir: Path, slug: str) -> None:
    text = render_text(workdir, slug)

    assert not re.search(r"(\.\.\.|…|[:?!]):", text), "a label ending in '...' (or ':') followed by ': URL'"
    assert "In this issue: In the spotlight" not in one_line(text)
    assert "More events... https://www.icmpd.org/news-centre/events/" in text.splitlines()
    assert "More news from ICMPD... https://www.icmpd.org/news-centre/" in text.splitlines()


@pytest.mark.parametrize("slug", SEED_ISSUES)
def test_lines_fit_78_columns_except_bare_urls(workdir: Path, slug: str) -> None:
    text = render_text(workdir, slug)

    too_long = [line for line in text.splitlines() if len(line) > WIDTH and not _BARE_URL.match(line.strip())]
    assert too_long == []


def test_long_headings_wrap_and_long_urls_stand_alone(workdir: Path) -> None:
    long_url = "https://www.icmpd.org/fileadmin/" + "a-very-long-path-segment/" * 4 + "paper.pdf"
    heading = "Other news from ICMPD, its partners and the migration dialogues it serves as Secretariat"
    issue = (workdir / "issues" / "2016-02.yaml").read_text(encoding="utf-8")
    issue = issue.replace("news:\n  stories:", f"news:\n  heading: {heading}\n  stories:", 1)
    issue = issue.replace("https://www.icmpd.org/fileadmin/thb/syria-thb-briefing-paper.pdf", long_url)
    (workdir / "issues" / "2016-02.yaml").write_text(issue, encoding="utf-8")
    assert len(heading) > WIDTH and len(long_url) > WIDTH

    text = render_text(workdir, "2016-02")

    lines = text.splitlines()
    too_long = [line for line in lines if len(line) > WIDTH and not _BARE_URL.match(line.strip())]
    assert too_long == []
    assert f"  {long_url}" in lines, "a URL longer than a line stands on a line of its own, whole"
    assert (heading, "=") in headings(text)


@pytest.mark.parametrize("slug", SEED_ISSUES)
def test_events_read_title_in_place_as_the_seed_writes_them(workdir: Path, slug: str) -> None:
    text = one_line(render_text(workdir, slug))
    issue = load_issue(workdir / "issues" / f"{slug}.yaml")

    assert issue.events
    for event in issue.events.items:
        assert event.place
        title = f"{event.programme}: {event.title}" if event.programme else event.title
        assert f"{title} in {event.place}" in text


@pytest.mark.parametrize("slug", SEED_ISSUES)
def test_spotlight_headline_appears_once(workdir: Path, slug: str) -> None:
    text = one_line(render_text(workdir, slug))
    issue = load_issue(workdir / "issues" / f"{slug}.yaml")

    assert issue.spotlight
    assert text.count(issue.spotlight.headline) == 1
