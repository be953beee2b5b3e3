"""A mistake in a customised template is one line naming the template file and line, never a traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mailer.compose.templates import default_templates_dir
from tests.cli_helpers import run_cli
from tests.conftest import ROOT


@pytest.fixture
def custom(tmp_path: Path) -> Path:
    """A content repository whose mailer.toml points at its own copy of the templates."""
    shutil.copytree(default_templates_dir(), tmp_path / "templates")
    shutil.copytree(ROOT / "issues", tmp_path / "issues")
    config = (ROOT / "mailer.toml").read_text(encoding="utf-8")
    (tmp_path / "mailer.toml").write_text('templates_dir = "templates"\n' + config, encoding="utf-8")
    return tmp_path


def _append(path: Path, text: str) -> int:
    """Append a line; returns its line number."""
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join([*lines, text]) + "\n", encoding="utf-8")
    return len(lines) + 1


@pytest.mark.parametrize("template", ["issue.txt", "issue.mjml", "sections/header.mjml"])
def test_a_syntax_error_names_the_template_and_line(custom: Path, template: str) -> None:
    line = _append(custom / "templates" / template, "{% if %}")
    result = run_cli("render", "issues/2016-02.yaml", cwd=custom)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"templates/{template}:{line}: template error: Expected an expression")
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr


def test_a_misspelt_name_fails_the_render_instead_of_leaving_a_blank(custom: Path) -> None:
    header = custom / "templates" / "sections" / "header.mjml"
    header.write_text(header.read_text(encoding="utf-8").replace("{{ issue.title }}", "{{ isue.title }}"))
    result = run_cli("render", "issues/2016-02.yaml", cwd=custom)
    assert (result.exit_code, result.stdout) == (1, "")
    assert "template error: 'isue' is undefined" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert not (custom / "build").exists()


@pytest.mark.parametrize(("missing", "says"), [("issue.txt", "no template 'issue.txt'"), ("inline.css", "cannot read")])
def test_a_missing_template_file_is_named(custom: Path, missing: str, says: str) -> None:
    (custom / "templates" / missing).unlink()
    result = run_cli("render", "issues/2016-02.yaml", cwd=custom)
    assert result.exit_code == 1
    assert says in result.stderr and len(result.stderr.splitlines()) == 1
