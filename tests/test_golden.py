"""Committed expected output for both seed issues; refresh deliberately with `pytest --update-golden`."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailer.compose.build import output_files
from mailer.compose.render import RenderedIssue

GOLDEN = Path(__file__).parent / "golden"


def reviewable(path: Path, content: str) -> str:
    """One tag per line for HTML, so a change shows as a readable diff; the bytes are otherwise the same."""
    return content.replace("><", ">\n<") if path.suffix == ".html" else content


@pytest.mark.parametrize("slug", ["2016-02", "2015-10"])
def test_output_matches_golden_files(
    slug: str, rendered: dict[str, RenderedIssue], request: pytest.FixtureRequest
) -> None:
    files = output_files(rendered[slug], GOLDEN / slug)
    if request.config.getoption("--update-golden"):
        for path, (content, _) in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(reviewable(path, content), encoding="utf-8", newline="")
    for path, (content, _) in files.items():
        assert path.exists(), f"{path} is missing: run `pytest tests/test_golden.py --update-golden`"
        expected = path.read_text(encoding="utf-8")
        assert reviewable(path, content) == expected, (
            f"{path.name} differs from the golden file; if intended, run `pytest tests/test_golden.py --update-golden` and review the diff"
        )
