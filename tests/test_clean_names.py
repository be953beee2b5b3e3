"""Names and attributes lose their control characters, the same way at every entry point (clean_text).

`subscribers add` and `subscribers import` run as a user runs them, on SQLite and PostgreSQL; the
export shows what was stored. The web subscribe form is in test_public_web.py.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from mailer.audience.clean_text import clean_text
from tests.cli_helpers import run_cli
from tests.conftest import ROOT

RLO, PDF, LRI, PDI = "\u202e", "\u202c", "\u2066", "\u2069"


@pytest.mark.parametrize(
    ("typed", "kept"),
    [
        ("Ana\r\nBcc: victim@example.org", "Ana Bcc: victim@example.org"),
        ("  Ana\t\tAlves \n", "Ana Alves"),
        ("A\x00na\x1b[31m Alves\x7f", "Ana[31m Alves"),
        ("Ana\x85Alves\u2028Costa\u2029Silva\x0bDias\x0cReis", "Ana Alves Costa Silva Dias Reis"),
        ("Ana\x80\x9fAlves", "AnaAlves"),
        ("Ana\x1c\x1d\x1e\x1fAlves", "AnaAlves"),
        (f"Invoice {RLO}fdp.exe{PDF} Ltd {LRI}x{PDI}", "Invoice fdp.exe Ltd x"),
        ("Jean\u00a0\u2003Dupont\u3000Sr", "Jean Dupont Sr"),
        ("\u05d3\u05d5\u05d3 \u200fCohen\u200e", "\u05d3\u05d5\u05d3 \u200fCohen\u200e"),
        ("Zoë\u200dMüller", "Zoë\u200dMüller"),
        ("\r\n\t\x00", ""),
    ],
    ids=[
        "crlf",
        "tabs-and-ends",
        "nul-esc-del",
        "unicode-line-breaks",
        "c1",
        "separators",
        "bidi-overrides",
        "unicode-spaces",
        "direction-marks-stay",
        "zwj-stays",
        "nothing-left",
    ],
)
def test_the_rule(typed: str, kept: str) -> None:
    """Breaks and tabs become a space; other controls and bidi overrides vanish; spaces collapse; ends are trimmed."""
    assert clean_text(typed) == kept
    assert clean_text(kept) == kept


@pytest.fixture
def run(tmp_path: Path, database_url: str) -> Callable[..., Result]:
    shutil.copy(ROOT / "mailer.toml", tmp_path / "mailer.toml")

    def mailer(*args: str) -> Result:
        return run_cli(*args, cwd=tmp_path, env={"MAILER_DATABASE_URL": database_url})

    assert mailer("lists", "create", "staff").exit_code == 0
    return mailer


def test_subscribers_add_stores_names_and_attributes_without_control_characters(run: Callable[..., Result]) -> None:
    added = run(
        "subscribers",
        "add",
        "staff",
        "ana@example.org",
        "--name",
        f" Ana\r\nBcc: victim@example.org\x00 {RLO}Alves ",
        "--attr",
        "Preferred\tLanguage=p\x1bt\r\n",
        "--attr",
        "Organisation=ICMPD\u2028Vienna",
    )
    assert (added.exit_code, added.stdout, added.stderr) == (0, "ana@example.org: added on 'staff'\n", "")
    assert run("subscribers", "export", "staff").stdout == (
        "email,name,organisation,preferred_language\n"
        "ana@example.org,Ana Bcc: victim@example.org Alves,ICMPD Vienna,pt\n"
    )
    changed = run("subscribers", "add", "staff", "ana@example.org", "--name", "Ana\tAlves")
    assert changed.stdout == "ana@example.org: updated on 'staff'\n"
    same = run("subscribers", "add", "staff", "ana@example.org", "--name", "\n Ana  Alves \x00")
    assert same.stdout == "ana@example.org: unchanged on 'staff'\n"


def test_subscribers_add_counts_the_300_characters_after_cleaning(run: Callable[..., Result]) -> None:
    padded = run("subscribers", "add", "staff", "ana@example.org", "--name", "n" * 300 + "\x00" * 50 + " \r\n")
    assert (padded.exit_code, padded.stdout) == (0, "ana@example.org: added on 'staff'\n")
    assert run("subscribers", "export", "staff").stdout == f"email,name\nana@example.org,{'n' * 300}\n"
    too_long = run("subscribers", "add", "staff", "bob@example.org", "--name", "b\r\n" * 151)
    assert (too_long.exit_code, too_long.stderr) == (1, "bob@example.org: name is longer than 300 characters (301)\n")


def test_subscribers_add_refuses_what_cleaning_cannot_mend_in_one_line(run: Callable[..., Result]) -> None:
    nameless = run("subscribers", "add", "staff", "ana@example.org", "--attr", "\x01\x02=value")
    assert (nameless.exit_code, nameless.stdout, nameless.stderr) == (
        1,
        "",
        "ana@example.org: an attribute name is empty\n",
    )
    not_utf8 = run("subscribers", "add", "staff", "ana@example.org", "--name", "Jos\udce9")  # a Latin-1 terminal
    assert (not_utf8.exit_code, not_utf8.stderr) == (
        1,
        "ana@example.org: name contains U+DCE9, not a character; remove it\n",
    )
    assert run("subscribers", "export", "staff").stdout == "email,name\n"


CSV_WITH_CONTROLS = (
    'email,name,"Preferred\r\nLanguage","Organi\x00sation","\x01"\r\n'
    'ana@example.org,"Ana\r\nBcc: victim@example.org","p\x00t\t","ICMPD\r\n\r\nVienna",x\r\n'
    'bob@example.org,"\tBob \u2028 Brown\x7f",en,"Shell \x1b[1mBold\x1b[0m Ltd",\r\n'
    'carla@example.org,"Carla\x85Costa",\x00,"\u202eLTD\u202c",\r\n'
    + f'dora@example.org,"{"d" * 300}\r\n\x00",de,,\r\n'
    + 'eve@example.org,"'
    + "e\r\n" * 151
    + '",,,\r\n'
)


def test_an_import_stores_quoted_fields_without_control_characters(run: Callable[..., Result], tmp_path: Path) -> None:
    """CR/LF and NUL inside quoted fields, in names, values and column names; the 300 counted after cleaning."""
    (tmp_path / "staff.csv").write_bytes(CSV_WITH_CONTROLS.encode())
    result = run("subscribers", "import", "staff", "staff.csv")
    assert (result.exit_code, result.stdout, result.stderr) == (
        1,
        "staff.csv: 4 added, 0 updated, 0 unchanged, 1 invalid, 0 skipped\n",
        "staff.csv:11: invalid: eve@example.org: name is longer than 300 characters (301)\n",
    )
    exported = run("subscribers", "export", "staff").stdout
    assert exported == (
        "email,name,organisation,preferred_language\n"
        "ana@example.org,Ana Bcc: victim@example.org,ICMPD Vienna,pt\n"
        "bob@example.org,Bob Brown,Shell [1mBold[0m Ltd,en\n"
        "carla@example.org,Carla Costa,LTD,\n"
        f"dora@example.org,{'d' * 300},,de\n"
    )
    (tmp_path / "again.csv").write_text(exported, encoding="utf-8")
    again = run("subscribers", "import", "staff", "again.csv")
    assert again.stdout == "again.csv: 0 added, 0 updated, 4 unchanged, 0 invalid, 0 skipped\n"


def test_a_list_description_is_one_line_of_plain_text_in_the_lists_table(run: Callable[..., Result]) -> None:
    created = run("lists", "create", "news", "--description", f"All\r\nBcc: x@example.org{RLO} news\x00", "--public")
    assert created.exit_code == 0, created.stderr
    [row] = [line for line in run("lists").stdout.splitlines() if line.startswith("news ")]
    assert row.endswith("All Bcc: x@example.org news [public]")
