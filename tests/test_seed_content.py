"""Both real newsletters come out whole: every story, link, publication and event, in the HTML and the text."""

from __future__ import annotations

import re

import pytest
from lxml import html as lxml_html

from mailer.compose.model import Issue, Link, Story
from mailer.compose.render import RenderedIssue
from tests.conftest import SEEDS

# Seed lines the layout legitimately rewrites: two headings flattened onto one line,
# the web-version line (checked on its own), and a download line split per language.
REWRITES = {
    "If the infomail is not displayed properly, click here": [],
    "If the newsletter is not displayed properly, click here": [],
    "Current vacancies Latest publications": ["Current vacancies", "Latest publications"],
    "ICMPD in the media Upcoming events": ["ICMPD in the media", "Upcoming events"],
    "Connect with us Other news from ICMPD": ["Connect with us", "Other news from ICMPD"],
    "Download the report in English or in French": ["Download the report in English", "Download the report in French"],
}


def flat(text: str) -> str:
    """Whitespace folded and dashes unspaced, so layout does not count as a difference."""
    return re.sub(r"\s*[-–]\s*", "-", " ".join(text.replace("\xa0", " ").split()))


def html_text(html: str) -> str:
    return flat(lxml_html.fromstring(html).text_content())


def seed_pieces(slug: str) -> list[str]:
    pieces = []
    for line in (SEEDS / f"newsletter-{slug}.txt").read_text(encoding="utf-8").splitlines():
        for piece in line.split("|"):
            piece = " ".join(piece.replace("\xa0", " ").split())
            if piece.startswith("In this issue "):
                piece = piece.removeprefix("In this issue ")
            if piece:
                pieces.extend(REWRITES.get(piece, [piece]))
    return pieces


def found(piece: str, text: str) -> bool:
    """An event line "TAG: Title in City, Country" is laid out as title and place."""
    if flat(piece) in text:
        return True
    title, sep, place = piece.rpartition(" in ")
    return bool(sep) and flat(title) in text and flat(place) in text


@pytest.mark.skipif(not SEEDS.is_dir(), reason="../shared/seeds is not beside this checkout")
@pytest.mark.parametrize("slug", ["2016-02", "2015-10"])
@pytest.mark.parametrize("output", ["email_html", "web_html", "text"])
def test_every_line_of_the_seed_newsletter_is_in_the_output(
    slug: str, output: str, rendered: dict[str, RenderedIssue]
) -> None:
    result = rendered[slug]
    text = flat(result.text) if output == "text" else html_text(getattr(result, output))
    missing = [piece for piece in seed_pieces(slug) if not found(piece, text)]
    assert missing == []


def all_stories(issue: Issue) -> list[Story]:
    stories = list(issue.spotlight.stories) if issue.spotlight else []
    for section in (issue.news, issue.other_news):
        if section:
            stories.extend(section.stories)
    return stories


def all_links(issue: Issue) -> list[Link]:
    links = [link for story in all_stories(issue) for link in story.links]
    links += issue.section_links
    for section in (issue.spotlight, issue.news, issue.other_news, issue.publications, issue.events):
        if section and section.more:
            links.append(section.more)
    if issue.publications:
        links += [link for item in issue.publications.items for link in item.downloads]
    return links


def test_seed_issues_are_transcribed_whole(seed_issues: dict[str, Issue]) -> None:
    counts = {
        slug: (
            len(all_stories(issue)),
            len(all_links(issue)),
            len(issue.publications.items) if issue.publications else 0,
            len(issue.events.items) if issue.events else 0,
        )
        for slug, issue in seed_issues.items()
    }
    assert counts == {"2016-02": (3, 15, 2, 3), "2015-10": (10, 27, 1, 3)}


def test_every_link_is_a_real_anchor_in_the_html_and_spelled_out_in_the_text(seed: tuple[Issue, RenderedIssue]) -> None:
    issue, result = seed
    anchors = {
        (" ".join(a.text_content().split()), a.get("href")) for a in lxml_html.fromstring(result.email_html).iter("a")
    }
    text = result.text
    for link in all_links(issue):
        assert (link.label, link.url) in anchors
        assert link.url in text


def test_publications_and_events_in_both_parts(seed: tuple[Issue, RenderedIssue]) -> None:
    issue, result = seed
    text, html = flat(result.text), html_text(result.email_html)
    assert issue.publications and issue.events
    for item in issue.publications.items:
        for part in [item.title, *item.authors, *item.summary]:
            assert flat(part) in text and flat(part) in html
    for event in issue.events.items:
        for part in [event.title, event.place or ""]:
            assert flat(part) in text and flat(part) in html


@pytest.mark.skipif(not SEEDS.is_dir(), reason="../shared/seeds is not beside this checkout")
@pytest.mark.parametrize(("slug", "word"), [("2016-02", "infomail"), ("2015-10", "newsletter")])
def test_the_issue_calls_itself_what_the_seed_calls_it(
    slug: str, word: str, rendered: dict[str, RenderedIssue]
) -> None:
    seed = (SEEDS / f"newsletter-{slug}.txt").read_text(encoding="utf-8").splitlines()[0]
    assert seed.startswith(f"If the {word} is not displayed properly")
    assert f"If the {word} is not displayed properly, read it in your browser:" in rendered[slug].text
