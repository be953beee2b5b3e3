"""Committed expected output for both seed issues; refresh deliberately with `pytest --update-golden`.

A refresh run writes the files and skips: it never passes, and CI (CI=true) refuses the flag (conftest).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mailer.compose.build import output_files
from mailer.compose.render import RenderedIssue

GOLDEN = Path(__file__).parent / "golden"
BETWEEN_TAGS = re.compile(r">(\n*)<")


def reviewable(path: Path, content: str) -> str:
    """One tag per line for HTML, so a change shows as a readable diff; nothing else is touched.

    Every run of line breaks between two tags gets one more (none becomes one, one becomes two), so
    the mapping is one-to-one: `exact()` gives back the very bytes, and a changed tag, attribute
    or even a line break between tags still differs.
    """
    if path.suffix != ".html":
        return content
    return BETWEEN_TAGS.sub(lambda found: f">{found.group(1)}\n<", content)


def exact(path: Path, golden: str) -> str:
    """The rendered bytes a golden file stands for: the inverse of `reviewable`."""
    if path.suffix != ".html":
        return golden
    return re.sub(r">(\n+)<", lambda found: f">{found.group(1)[1:]}<", golden)


@pytest.mark.parametrize("slug", ["2016-02", "2015-10"])
def test_output_matches_golden_files(
    slug: str, rendered: dict[str, RenderedIssue], request: pytest.FixtureRequest
) -> None:
    files = output_files(rendered[slug], GOLDEN / slug)
    if request.config.getoption("--update-golden"):
        for path, (content, _) in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(reviewable(path, content), encoding="utf-8", newline="")
        pytest.skip(f"golden files updated: review the diff (git diff tests/golden/{slug}/) and commit it")
    for path, (content, _) in files.items():
        assert path.exists(), f"{path} is missing: run `pytest tests/test_golden.py --update-golden`"
        expected = path.read_text(encoding="utf-8")
        assert exact(path, expected) == content and reviewable(path, content) == expected, (
            f"{path.name} differs from the golden file; if intended, run `pytest tests/test_golden.py --update-golden` and review the diff"
        )


MARKUP_CHANGES = [
    ('role="presentation"', 'role="none"'),  # an attribute value
    ('role="presentation"', 'rol="presentation"'),  # an attribute name
    ("<table", "<div"),  # a tag
    ("</p>", "</span>"),  # a closing tag
    ("><", "> <"),  # a space between two tags: a visible gap between inline elements
    ("><", ">\n<"),  # a line break between two tags, the one thing the normaliser adds
]


@pytest.mark.parametrize(("old", "new"), MARKUP_CHANGES)
def test_a_real_markup_change_makes_the_comparison_differ(
    old: str, new: str, rendered: dict[str, RenderedIssue]
) -> None:
    path = Path("email.html")
    html = rendered["2016-02"].email_html
    assert old in html
    changed = html.replace(old, new, 1)
    assert reviewable(path, changed) != reviewable(path, html)
    assert exact(path, reviewable(path, html)) == html


def test_line_breaks_between_tags_survive_the_round_trip() -> None:
    path = Path("web.html")
    for html in ("<p>a</p><p>b</p>", "<p>a</p>\n<p>b</p>", "<p>a</p>\n\n<p>b</p>", "<br><br>\n<br>", "a > b < c"):
        assert exact(path, reviewable(path, html)) == html
    assert len({reviewable(path, html) for html in ("<i></i><b>", "<i></i>\n<b>", "<i>\n</i><b>")}) == 3
