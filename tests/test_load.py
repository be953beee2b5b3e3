"""The issue format as a user meets it: what loads, and the exact message for what does not."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mailer.compose.load import load_issue
from mailer.errors import IssueFileError, MailerError
from tests.conftest import MINIMAL

WriteIssue = Callable[..., Path]


def problems(path: Path) -> list[str]:
    with pytest.raises(IssueFileError) as caught:
        load_issue(path)
    prefix = f"{path}:"
    return [line.removeprefix(prefix) for line in caught.value.lines()]


def test_minimal_issue_loads_with_defaults(write_issue: WriteIssue) -> None:
    issue = load_issue(write_issue(MINIMAL))
    assert issue.title == "March 2016 Monthly Update"
    assert issue.language == "en"
    assert issue.email_subject == "March 2016 Monthly Update"
    assert issue.news is not None and issue.news.stories[0].paragraphs == ["The first paragraph."]


def test_every_problem_is_reported_at_once_with_line_column_and_field(write_issue: WriteIssue) -> None:
    path = write_issue(
        """\
title: Test
date: 2016-02-30
preheader: x
titel: oops
news:
  stories:
    - title: A
      links:
        - label: Foo
          url: www.example.org
    - paragraphs: [hi]
events:
  items:
    - date: 2016-03-04
      end: 2016-02-29
      title: X
"""
    )
    assert problems(path) == [
        "2:7: date: Input should be a valid date or datetime, day value is outside expected range, got '2016-02-30'",
        "4:1: titel: unknown field; did you mean 'title'?",
        "10:16: news.stories[0].links[0].url: must be an absolute http(s) or mailto URL, got 'www.example.org'",
        "11:7: news.stories[1].title: required field is missing",
        "14:7: events.items[0]: end 2016-02-29 is before date 2016-03-04",
    ]


def test_unknown_key_far_from_any_field_lists_the_known_ones(write_issue: WriteIssue) -> None:
    text = MINIMAL.replace("      paragraphs:", "      zzz: 1\n      paragraphs:")
    [line] = problems(write_issue(text))
    assert line.startswith("7:7: news.stories[0].zzz: unknown field; known fields: category, title, url, date, image,")


def test_missing_required_fields_point_at_the_document(write_issue: WriteIssue) -> None:
    assert problems(write_issue("title: Only a title\n")) == [
        "1:1: date: required field is missing",
        "1:1: preheader: required field is missing",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("title: a\ntitle: b\n", '2:1: YAML: found duplicate key "title"'),
        ("title: [a\n", "2:1: YAML: expected ',' or ']', but got '<stream end>'"),
        ("- a\n- b\n", "1:1: the document is a list; an issue is a mapping of fields (title: ..., date: ...)"),
        ("just text\n", "1:1: the document is a single value; an issue is a mapping of fields (title: ..., date: ...)"),
        ("", "1:1: the file is empty; an issue needs title, date and preheader"),
        ("a: 1\n---\nb: 2\n", "2:1: YAML: expected a single document in the stream but found another document"),
    ],
)
def test_broken_yaml_gets_one_line_not_a_traceback(write_issue: WriteIssue, text: str, expected: str) -> None:
    assert problems(write_issue(text)) == [expected]


def test_alias_bomb_is_refused_before_it_expands(write_issue: WriteIssue) -> None:
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for name, prev in zip("bcdefghi", "abcdefgh", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    [line] = problems(write_issue("\n".join(lines) + "\n"))
    assert "more than 20000 values (an alias expanding too far?)" in line


def test_a_few_aliases_are_fine(write_issue: WriteIssue) -> None:
    text = (
        MINIMAL
        + "section_links:\n  - &jobs {label: Jobs, url: 'https://example.org/jobs'}\nevents:\n  items:\n    - {date: 2016-03-01, title: T}\n  more: *jobs\n"
    )
    issue = load_issue(write_issue(text))
    assert issue.events is not None and issue.events.more == issue.section_links[0]


def test_not_utf8_names_the_line(write_issue: WriteIssue, tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"title: ok\npreheader: caf\xe9\n")
    assert problems(path) == ["2:1: not UTF-8 text; save the file as UTF-8"]


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(MailerError, match=r"nope\.yaml: no such file$"):
        load_issue(tmp_path / "nope.yaml")


def test_links_in_paragraphs_must_be_absolute(write_issue: WriteIssue) -> None:
    text = MINIMAL.replace("The first paragraph.", "'Click [here](javascript:alert(1)) or [there](/relative).'")
    assert problems(write_issue(text)) == [
        "8:11: news.stories[0].paragraphs[0]: must be an absolute http(s) or mailto URL, got 'javascript:alert(1)'"
    ]


def test_event_range_across_months_is_kept(write_issue: WriteIssue) -> None:
    text = (
        MINIMAL
        + "events:\n  items:\n    - {date: 2016-02-29, end: 2016-03-04, programme: MIEUX, title: T, place: Baku}\n"
    )
    event = load_issue(write_issue(text)).events.items[0]  # type: ignore[union-attr]
    assert (event.date.isoformat(), event.end.isoformat(), event.programme) == ("2016-02-29", "2016-03-04", "MIEUX")  # type: ignore[union-attr]
