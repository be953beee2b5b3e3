"""The commands as a user runs them: exact output, exit codes, and nothing half-written."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import Result

from mailer.compose.model import issue_json_schema
from mailer.errors import ExitStatus
from tests.cli_helpers import run_cli
from tests.conftest import MINIMAL, ROOT

SCHEMA_FILE = ROOT / "schema" / "issue.schema.json"


def mailer(*args: str, cwd: Path = ROOT) -> Result:
    return run_cli(*args, cwd=cwd)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A content repository as users have one: mailer.toml and issues/."""
    shutil.copy(ROOT / "mailer.toml", tmp_path / "mailer.toml")
    (tmp_path / "issues").mkdir()
    shutil.copy(ROOT / "issues" / "2016-02.yaml", tmp_path / "issues" / "2016-02.yaml")
    return tmp_path


def test_render_writes_three_files_and_prints_one_line_each(project: Path) -> None:
    result = mailer("render", "issues/2016-02.yaml", cwd=project)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [re.sub(r"\d+\.\d KB", "N KB", line) for line in lines] == [
        "build/2016-02/email.html  N KB  email",
        "build/2016-02/email.txt  N KB  plain-text alternative",
        "build/2016-02/web.html  N KB  web version",
    ]
    for line in lines:
        path, size = line.split("  ")[:2]
        assert abs((project / path).stat().st_size / 1024 - float(size.split()[0])) < 0.1
    assert result.stderr == ""


def test_render_to_a_chosen_folder(project: Path) -> None:
    result = mailer("render", "issues/2016-02.yaml", "-o", "out/feb", cwd=project)
    assert result.exit_code == 0
    assert sorted(p.name for p in (project / "out" / "feb").iterdir()) == ["email.html", "email.txt", "web.html"]


def test_a_failed_render_leaves_the_previous_output_untouched(project: Path) -> None:
    assert mailer("render", "issues/2016-02.yaml", cwd=project).exit_code == 0
    before = {p.name: p.read_bytes() for p in (project / "build" / "2016-02").iterdir()}
    issue = project / "issues" / "2016-02.yaml"
    issue.write_text(
        issue.read_text().replace("url: https://www.icmpd.org/news-centre/photo-gallery/", "url: photo-gallery/")
    )
    result = mailer("render", "issues/2016-02.yaml", cwd=project)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        "issues/2016-02.yaml:26:16: news.stories[0].links[0].url: "
        "must be an absolute http(s) or mailto URL, got 'photo-gallery/'\n"
    )
    assert {p.name: p.read_bytes() for p in (project / "build" / "2016-02").iterdir()} == before


def test_check_validates_without_writing(project: Path) -> None:
    (project / "issues" / "bad.yaml").write_text(MINIMAL.replace("title: A story", "titl: A story"))
    result = mailer("check", "issues/2016-02.yaml", "issues/bad.yaml", cwd=project)
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == (
        "issues/bad.yaml:6:7: news.stories[0].titl: unknown field; did you mean 'title'?\n"
        "issues/bad.yaml:6:7: news.stories[0].title: required field is missing\n"
    )
    assert mailer("check", "issues/2016-02.yaml", cwd=project).stdout == "1 issue file OK\n"
    assert not (project / "build").exists()


def test_config_problems_are_one_line_each(project: Path) -> None:
    (project / "mailer.toml").write_text('public_url = "newsletter.example.org"\n[branding]\nnmae = "X"\n')
    result = mailer("render", "issues/2016-02.yaml", cwd=project)
    assert result.exit_code == 1
    assert result.stderr == (
        "mailer.toml:1: public_url: must be an absolute http(s) or mailto URL, got 'newsletter.example.org'\n"
        "mailer.toml:3: branding.nmae: unknown setting; did you mean 'name'?\n"
    )


def test_missing_public_url_says_where_to_set_it(project: Path) -> None:
    (project / "mailer.toml").write_text("")
    result = mailer("render", "issues/2016-02.yaml", cwd=project)
    assert (result.exit_code, result.stderr) == (
        1,
        "public_url is not set; set it in mailer.toml or MAILER_PUBLIC_URL (emails link to their web version at <public_url>/<issue>/)\n",
    )


def test_environment_overrides_the_config_file(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILER_PUBLIC_URL", "https://news.example.org/archive")
    assert mailer("render", "issues/2016-02.yaml", cwd=project).exit_code == 0
    html = (project / "build" / "2016-02" / "email.html").read_text()
    assert 'href="https://news.example.org/archive/2016-02/"' in html


def test_usage_errors_exit_2() -> None:
    result = mailer("render")
    assert result.exit_code == 2 and "Missing argument 'FILES...'" in result.stderr


def test_schema_command_matches_the_committed_copy() -> None:
    result = mailer("schema")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == issue_json_schema()
    assert json.loads(SCHEMA_FILE.read_text()) == issue_json_schema(), "run `mailer schema > schema/issue.schema.json`"


def test_issue_files_point_editors_at_the_schema_and_validate_against_it() -> None:
    import jsonschema
    from ruamel.yaml import YAML

    for path in sorted((ROOT / "issues").glob("*.yaml")):
        assert path.read_text().splitlines()[0] == "# yaml-language-server: $schema=../schema/issue.schema.json"
        data = json.loads(json.dumps(YAML(typ="safe").load(path), default=str))
        jsonschema.validate(data, json.loads(SCHEMA_FILE.read_text()))


def test_schema_rejects_what_the_model_rejects() -> None:
    import jsonschema

    schema = json.loads(SCHEMA_FILE.read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"title": "t", "date": "2016-01-01", "preheader": "p", "titel": "x"}, schema)


def test_every_command_has_help_and_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    from mailer.cli import cli

    for name, command in cli.commands.items():
        assert command.help, name
        assert f"mailer {name}" in readme, f"README does not mention `mailer {name}`"


def test_publish_leaves_a_broken_issue_file_out_with_a_warning_and_refuses_only_when_strict(project: Path) -> None:
    result = mailer("publish", "-o", "site", cwd=project)
    assert result.exit_code == 0, result.stderr
    assert [re.sub(r"\d+\.\d KB", "N KB", line) for line in result.stdout.splitlines()] == [
        "site/index.html  N KB",
        "site/feed.xml  N KB",
        "site/2016-02/index.html  N KB",
        "published 1 issue to site/ for https://newsletter.icmpd.org",
    ]
    published = (project / "site" / "2016-02" / "index.html").read_text(encoding="utf-8")

    (project / "issues" / "2016-03.yaml").write_text("title: March\n", encoding="utf-8")
    lenient = mailer("publish", "-o", "site", cwd=project)
    assert lenient.exit_code == 0, lenient.stderr
    assert lenient.stderr.splitlines() == [
        "issues/2016-03.yaml:1:1: date: required field is missing",
        "issues/2016-03.yaml:1:1: preheader: required field is missing",
        "issues/2016-03.yaml: left out of the archive until it is valid (mailer check issues/2016-03.yaml)",
    ]
    assert lenient.stdout.splitlines()[-1] == "published 1 issue to site/ for https://newsletter.icmpd.org"
    assert not (project / "site" / "2016-03").exists()

    (project / "site" / "2016-02" / "index.html").write_text("changed by hand", encoding="utf-8")
    strict = mailer("publish", "-o", "site", "--strict", cwd=project)
    assert strict.exit_code == 1
    assert strict.stderr.splitlines() == [
        "issues/2016-03.yaml:1:1: date: required field is missing",
        "issues/2016-03.yaml:1:1: preheader: required field is missing",
        "site: not published (--strict): fix the issue files above",
    ]
    assert (project / "site" / "2016-02" / "index.html").read_text(encoding="utf-8") == "changed by hand"
    assert published.startswith("<!DOCTYPE html>")


def test_a_mistyped_flag_exits_with_the_usage_code(workdir: Path) -> None:
    result = run_cli("render", "issues/2016-02.yaml", "--outptu", "x", cwd=workdir)
    assert result.exit_code == ExitStatus.USAGE
    assert result.stderr.endswith("Error: No such option '--outptu'. Did you mean '--output'?\n")
