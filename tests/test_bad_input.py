"""Bad input gets one clear line, never a traceback: issue files, subscriber data, links, database URLs.

Each case runs where a user meets it: `mailer check`/`render`, `mailer subscribers ...` and
`mailer lists` in process (run_cli), the public web through Starlette's TestClient; storage on
SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import mjml
import pytest
import sqlalchemy as sa
from click.testing import Result
from markupsafe import escape
from sqlalchemy.engine import Engine
from starlette.testclient import TestClient

from mailer.audience.database import subscribers
from mailer.audience.lists import MAX_TEXT, add_subscriber, create_list, mailable_subscribers
from mailer.audience.subscriber_csv import from_spreadsheet, spreadsheet_safe
from mailer.compose.load import MAX_ISSUE_BYTES, NOT_IN_EMAIL, load_issue
from mailer.delivery.unsubscribe import BadToken, make_token, read_token
from mailer.errors import MailerError
from mailer.settings import Settings, load_settings
from mailer.web.public_web import create_app
from tests.cli_helpers import run_cli
from tests.conftest import MINIMAL, ROOT, SECRET

HEAD = "title: T\ndate: 2016-03-10\npreheader: P\n"


def check(tmp_path: Path, text: str | bytes, name: str = "issue.yaml") -> Result:
    """`mailer check NAME` in a content folder (mailer.toml, so `mailer render` works there too)."""
    shutil.copy(ROOT / "mailer.toml", tmp_path / "mailer.toml")
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return run_cli("check", name, cwd=tmp_path)


def one_line_error(result: Result) -> str:
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    return result.stderr.rstrip("\n")


# --- YAML merge keys and tags ------------------------------------------------------------------

MERGED = """\
title: T
date: 2016-03-10
preheader: P
news:
  stories:
    - &story
      title: First
      paragraphs: [Shared paragraph.]
      links: [{label: More, url: "https://example.org/"}]
    - <<: *story
      title: Second
"""


def test_merge_keys_work_and_merged_values_are_validated_where_they_are_written(tmp_path: Path) -> None:
    result = check(tmp_path, MERGED)
    assert (result.exit_code, result.stdout, result.stderr) == (0, "1 issue file OK\n", "")
    second = load_issue(tmp_path / "issue.yaml").news.stories[1]  # type: ignore[union-attr]
    assert (second.title, second.paragraphs, second.links[0].label) == ("Second", ["Shared paragraph."], "More")
    assert run_cli("render", "issue.yaml", "-o", "out", cwd=tmp_path).exit_code == 0

    broken = MERGED.replace('"https://example.org/"', "example.org").replace("title: Second", "titel: Second")
    result = check(tmp_path, broken)
    assert result.exit_code == 1
    assert result.stderr == (
        "issue.yaml:9:34: news.stories[0].links[0].url: must be an absolute http(s) or mailto URL, got 'example.org'\n"
        "issue.yaml:9:34: news.stories[1].links[0].url: must be an absolute http(s) or mailto URL, got 'example.org'\n"
        "issue.yaml:11:7: news.stories[1].titel: unknown field; did you mean 'title'?\n"
    )


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ('!!python/object/apply:os.system ["touch pwned"]', "!!python/object/apply:os.system"),
        ("!!python/name:os.system", "!!python/name:os.system"),
        ("!custom T", "!custom"),
        ("!!str T", "!!str"),
        ("! T", "!"),
        ("!<tag:example.org,2024:x> T", "!<tag:example.org,2024:x>"),
        ("&a !!binary aGk=", "!!binary"),
    ],
)
def test_tags_are_refused_with_their_position(tmp_path: Path, value: str, shown: str) -> None:
    text = HEAD.replace("title: T", f"title: {value}")
    assert one_line_error(check(tmp_path, text)) == (
        f"issue.yaml:1:8: YAML tags such as {shown} are not allowed; write the plain value (in quotes if it is text)"
    )
    assert not (tmp_path / "pwned").exists()


def test_a_tag_on_a_nested_mapping_is_refused_too(tmp_path: Path) -> None:
    text = HEAD + "news:\n  stories:\n    - !!python/object:mailer.compose.model.Story {title: x}\n"
    assert one_line_error(check(tmp_path, text)) == (
        "issue.yaml:6:7: YAML tags such as !!python/object:mailer.compose.model.Story are not allowed; "
        "write the plain value (in quotes if it is text)"
    )


# --- characters email HTML cannot carry ---------------------------------------------------------


@pytest.mark.parametrize(
    ("escaped", "named"),
    [
        ("\\0", "U+0000 (a control character)"),
        ("\\e", "U+001B (a control character)"),
        ("\\b", "U+0008 (a control character)"),
        ("\\v", "U+000B (a control character)"),
        ("\\f", "U+000C (a control character)"),
        ("\\x1f", "U+001F (a control character)"),
        ("\\uFFFE", "U+FFFE (a noncharacter)"),
        ("\\uFFFF", "U+FFFF (a noncharacter)"),
        ("\\uD800", "U+D800 (a lone surrogate)"),
        ("\\uDFFF", "U+DFFF (a lone surrogate)"),
    ],
)
def test_check_refuses_what_email_html_cannot_carry_with_file_line_column_and_field(
    tmp_path: Path, escaped: str, named: str
) -> None:
    text = HEAD + f'news:\n  stories:\n    - title: A story\n      paragraphs: ["One", "Two {escaped} three"]\n'
    assert one_line_error(check(tmp_path, text)) == (
        f"issue.yaml:7:27: news.stories[0].paragraphs[1]: {named} cannot be sent in an email; remove it"
    )
    # before this check, render was where it failed: "MJML: unable to parse next template...", no location
    assert one_line_error(run_cli("render", "issue.yaml", cwd=tmp_path)).startswith("issue.yaml:7:27: ")


def test_every_bad_character_is_reported_at_once_and_in_field_names_too(tmp_path: Path) -> None:
    text = 'title: "A\\0"\ndate: 2016-03-10\npreheader: "\\e"\n"sub\\x01ject": S\n'
    result = check(tmp_path, text)
    assert result.exit_code == 1
    assert result.stderr == (
        "issue.yaml:1:8: title: U+0000 (a control character) cannot be sent in an email; remove it\n"
        "issue.yaml:3:12: preheader: U+001B (a control character) cannot be sent in an email; remove it\n"
        "issue.yaml:4:1: sub\x01ject: U+0001 (a control character) cannot be sent in an email; "
        "remove it from the field name\n"
    )


def test_raw_control_characters_in_the_file_are_one_line_with_their_position(tmp_path: Path) -> None:
    text = (HEAD + "photo_credits: ab\x00c\n").encode()
    assert one_line_error(check(tmp_path, text)) == (
        "issue.yaml:4:18: YAML: U+0000 (a control character) is not allowed in a YAML file; remove it"
    )
    text = (HEAD + "photo_credits: ab\x1bc\n").encode()
    assert one_line_error(check(tmp_path, text)).startswith("issue.yaml:4:18: YAML: U+001B (a control character)")


SAMPLE = [
    *range(0, 0x3000),
    *range(0xD7F0, 0xE010),
    *range(0xF8F0, 0x10010),
    *(plane * 0x10000 + last for plane in range(1, 17) for last in (0xFFFE, 0xFFFF)),
    0x1F600,
    0xE0001,
]
"""Every control character, the surrogates and noncharacters with their neighbours, and far planes."""


def _mjml_refuses(char: str) -> bool:
    """Whether MJML fails on the character escaped as the templates escape text."""
    source = f"<mjml><mj-body><mj-section><mj-column><mj-text>a{escape(char)}b</mj-text></mj-column></mj-section></mj-body></mjml>"
    try:
        mjml.mjml2html(source, fonts={}, disable_comments=True)
    except Exception:  # mjml-python raises a bare Exception subclass from Rust
        return True
    return False


def test_the_check_refuses_exactly_what_mjml_refuses() -> None:
    differ = [hex(code) for code in SAMPLE if bool(NOT_IN_EMAIL.match(chr(code))) != _mjml_refuses(chr(code))]
    assert differ == []


def _quoted(text: str) -> str:
    """The inside of a double-quoted YAML scalar: printable characters as they are, the rest escaped."""
    raw = re.compile(r"[\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]")
    return "".join(c if raw.fullmatch(c) and c not in '"\\' else f"\\U{ord(c):08X}" for c in text)


def test_render_succeeds_for_every_character_check_accepts(tmp_path: Path) -> None:
    accepted = _quoted("".join(chr(code) for code in SAMPLE if not NOT_IN_EMAIL.match(chr(code))))
    text = f"""\
title: "x{accepted}"
date: 2016-03-10
preheader: "p{_quoted("".join(map(chr, range(0x20, 0x20 + 150))))}"
greeting: "g{accepted.replace("{", "{{").replace("}", "}}")}"
spotlight: {{headline: "h{accepted}", intro: ["i{accepted}"]}}
news:
  heading: "n{accepted}"
  stories:
    - title: "t{accepted}"
      category: "c{accepted}"
      image: {{src: "https://example.org/a.png", alt: "a{accepted}", credit: "c{accepted}"}}
      paragraphs: ["p{accepted}", "*e{accepted}* [l{accepted}](https://example.org/)"]
      links: [{{label: "l{accepted}", url: "https://example.org/"}}]
publications: {{items: [{{title: "t{accepted}", authors: ["a{accepted}"], summary: ["s{accepted}"]}}]}}
events:
  items: [{{date: 2016-03-10, title: "e{accepted}", place: "p{accepted}", programme: "g{accepted}"}}]
photo_credits: "c{accepted}"
"""
    result = check(tmp_path, text)
    assert (result.exit_code, result.stderr) == (0, "")
    result = run_cli("render", "issue.yaml", "-o", "out", cwd=tmp_path)
    assert (result.exit_code, result.stderr) == (0, "")


# --- size ---------------------------------------------------------------------------------------


def test_an_issue_file_over_max_issue_bytes_is_refused_before_parsing(tmp_path: Path) -> None:
    padding = MAX_ISSUE_BYTES - len(MINIMAL.encode()) - 2
    at_limit = MINIMAL + "#" + "x" * padding + "\n"
    assert len(at_limit.encode()) == MAX_ISSUE_BYTES
    assert check(tmp_path, at_limit).stdout == "1 issue file OK\n"

    over = "title: [unclosed\n" + "#" * MAX_ISSUE_BYTES  # would be a YAML error if it were parsed
    message = (
        "big.yaml: 1,000,017 bytes, more than max_issue_bytes (1,000,000); "
        "that is not an issue file, or raise max_issue_bytes if it is"
    )
    assert one_line_error(check(tmp_path, over, name="big.yaml")) == message
    assert one_line_error(run_cli("render", "big.yaml", cwd=tmp_path)) == message


def test_load_issue_takes_the_limit_and_defaults_to_the_settings_default(tmp_path: Path) -> None:
    assert Settings.model_fields["max_issue_bytes"].default == MAX_ISSUE_BYTES
    path = tmp_path / "issue.yaml"
    path.write_text(MINIMAL + "#" * 2048 + "\n")
    with pytest.raises(MailerError, match=r"^.*issue.yaml: 2,\d{3} bytes, more than max_issue_bytes \(2,048\)"):
        load_issue(path, max_bytes=2048)
    assert load_issue(path).title == "March 2016 Monthly Update"


def test_the_max_issue_bytes_setting_governs_check_render_and_the_archive(workdir: Path, settings: Settings) -> None:
    from mailer.web.archive import scan_archive

    env = {"MAILER_MAX_ISSUE_BYTES": "2048"}
    result = run_cli("check", "issues/2016-02.yaml", cwd=workdir, env=env)
    assert result.exit_code == 1
    assert re.fullmatch(
        r"issues/2016-02.yaml: \d{1,3},\d{3} bytes, more than max_issue_bytes \(2,048\); .*\n", result.stderr
    )
    assert run_cli("render", "issues/2016-02.yaml", cwd=workdir, env=env).exit_code == 1
    assert run_cli("check", "issues/2016-02.yaml", cwd=workdir).exit_code == 0
    small = settings.model_copy(update={"max_issue_bytes": 2048})
    assert [entry.slug for entry in scan_archive(workdir / "issues", small).entries] == []
    assert len(scan_archive(workdir / "issues", settings).entries) == 2


# --- subscriber names and attributes: the same limits on both databases ------------------------


@pytest.fixture
def run(tmp_path: Path, database_url: str) -> Callable[..., Result]:
    shutil.copy(ROOT / "mailer.toml", tmp_path / "mailer.toml")

    def mailer(*args: str) -> Result:
        return run_cli(*args, cwd=tmp_path, env={"MAILER_DATABASE_URL": database_url})

    return mailer


def test_the_text_limit_is_the_name_column_size() -> None:
    assert subscribers.c.name.type.length == MAX_TEXT  # type: ignore[attr-defined]


def test_a_bad_row_is_reported_and_skipped_and_the_rest_imported(run: Callable[..., Result], tmp_path: Path) -> None:
    run("lists", "create", "staff")
    rows = [
        ["email", "name", "language"],
        ["ana@example.org", "Ana", "pt"],
        ["nul@example.org", "A\x00B", ""],
        ["long@example.org", "x" * 301, ""],
        ["max@example.org", "y" * 300, ""],
        ["attr@example.org", "Attr", "z" * 301],
        ["esc@example.org", "Esc", "p\x1bt"],
        ["bob@example.org", "Bob", "en"],
        ["nul@example.org", "Second try", ""],
    ]
    with (tmp_path / "staff.csv").open("w", newline="", encoding="utf-8") as file:
        csv.writer(file).writerows(rows)
    result = run("subscribers", "import", "staff", "staff.csv")
    assert result.exit_code == 1
    assert result.stdout == "staff.csv: 5 added, 0 updated, 0 unchanged, 2 invalid, 1 skipped\n"
    assert result.stderr == (
        "staff.csv:4: invalid: long@example.org: name is longer than 300 characters (301)\n"
        "staff.csv:6: invalid: attr@example.org: attribute 'language' is longer than 300 characters (301)\n"
        "staff.csv:9: skipped: nul@example.org is a duplicate of line 3\n"
    )
    exported = run("subscribers", "export", "staff").stdout
    assert exported == (
        "email,name,language\nana@example.org,Ana,pt\nbob@example.org,Bob,en\nesc@example.org,Esc,pt\n"
        f"max@example.org,{'y' * 300},\nnul@example.org,AB,\n"
    )


def test_a_column_name_that_cannot_be_stored_stops_the_import(run: Callable[..., Result], tmp_path: Path) -> None:
    run("lists", "create", "staff")
    (tmp_path / "staff.csv").write_text(f"email,{'c' * 301}\nana@example.org,x\n")
    assert one_line_error(run("subscribers", "import", "staff", "staff.csv")) == (
        "staff.csv:1: column name is longer than 300 characters (301); nothing was imported"
    )


def test_subscribers_add_refuses_what_it_cannot_store_in_one_line(run: Callable[..., Result]) -> None:
    run("lists", "create", "staff")
    assert one_line_error(run("subscribers", "add", "staff", "ana@example.org", "--name", "x" * 400)) == (
        "ana@example.org: name is longer than 300 characters (400)"
    )
    assert one_line_error(run("subscribers", "add", "staff", "ana@example.org", "--name", "Jos\udce9")) == (
        "ana@example.org: name contains U+DCE9, not a character; remove it"
    )
    assert one_line_error(run("subscribers", "add", "staff", "ana@example.org", "--attr", f"k={'v' * 301}")) == (
        "ana@example.org: attribute 'k' is longer than 300 characters (301)"
    )
    assert one_line_error(run("subscribers", "add", "staff", "ana@example.org", "--attr", f"{'k' * 301}=v")) == (
        "ana@example.org: attribute name is longer than 300 characters (301)"
    )
    assert run("subscribers", "export", "staff").stdout == "email,name\n"
    result = run("subscribers", "add", "staff", "ana@example.org", "--name", "n" * 300)
    assert (result.exit_code, result.stdout) == (0, "ana@example.org: added on 'staff'\n")


# --- unsubscribe tokens -------------------------------------------------------------------------

ONE_CLICK = {"List-Unsubscribe": "One-Click"}
NOT_TOKENS = [
    "\u00b2.1.x",
    "1.\u00b2.x",
    "\u0661.1.x",
    "9" * 5000 + ".1.x",
    "1." + "9" * 4301 + ".x",
    "+1.1.x",
    " 1.1.x",
]


@pytest.mark.parametrize("token", NOT_TOKENS)
def test_ids_that_are_not_plain_short_digits_are_a_bad_token(token: str) -> None:
    with pytest.raises(BadToken, match="^this unsubscribe link is not valid$"):
        read_token(SECRET, token)


def test_make_token_still_reads_back() -> None:
    assert read_token(SECRET, make_token(SECRET, 123456789012, 7)) == (123456789012, 7, None)
    assert read_token(SECRET, make_token(SECRET, 12, 7, "2016-02.b")) == (12, 7, "2016-02.b")


@pytest.fixture
def web(engine: Engine, database_url: str) -> TestClient:
    """The app `mailer serve` runs, in process (as in tests/test_public_web.py)."""
    settings = load_settings(
        ROOT / "mailer.toml",
        public_url="http://testserver",
        issues_dir=ROOT / "issues",
        database_url=database_url,
        sender="ICMPD Newsletter <newsletter@icmpd.org>",
        unsubscribe_secret=SECRET,
    )
    return TestClient(create_app(settings, engine), base_url="http://testserver")


@pytest.mark.parametrize("path", ["/unsubscribe/%C2%B2.1.x", f"/unsubscribe/{'9' * 4301}.1.x"])
def test_odd_ids_in_an_unsubscribe_link_are_a_400_like_any_invalid_link(web: TestClient, path: str) -> None:
    invalid_page, invalid_post = web.get("/unsubscribe/x"), web.post("/unsubscribe/x", data=ONE_CLICK)
    assert (invalid_page.status_code, invalid_post.status_code) == (400, 400)
    page, post = web.get(path), web.post(path, data=ONE_CLICK)
    assert (page.status_code, page.text) == (400, invalid_page.text)
    assert (post.status_code, post.text) == (400, invalid_post.text)


# --- database URLs ------------------------------------------------------------------------------


def lists_with(tmp_path: Path, url: str) -> str:
    return one_line_error(run_cli("lists", cwd=tmp_path, env={"MAILER_DATABASE_URL": url}))


def test_a_file_that_is_not_a_database_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("root:x:0:0:root:/root:/bin/bash\n" * 200)
    url = f"sqlite:///{tmp_path}/notes.txt"
    assert lists_with(tmp_path, url) == (
        f"database {url}: file is not a database; point database_url at a new file or one mailer created"
    )
    if Path("/etc/passwd").is_file():
        assert lists_with(tmp_path, "sqlite:////etc/passwd").startswith("database sqlite:////etc/passwd: ")


def test_a_folder_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    url = f"sqlite:///{tmp_path}/a-file/sub/mailer.sqlite3"
    assert lists_with(tmp_path, url) == (
        f"database {url}: cannot create the folder {tmp_path}/a-file/sub: Not a directory; "
        "point database_url at a folder you can write"
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "mysql://ana:secret@db.example.org/news",
            "database_url mysql://ana:********@db.example.org/news: mysql is not supported; "
            "use sqlite:///path.sqlite3 or postgresql+psycopg://user@host/db",
        ),
        (
            "postgresql+asyncpg://ana@db.example.org/news",
            "database_url postgresql+asyncpg://ana@db.example.org/news: postgresql+asyncpg is not supported; "
            "use sqlite:///path.sqlite3 or postgresql+psycopg://user@host/db",
        ),
        (
            "oracle+nothing://x",
            "database_url oracle+nothing://x: oracle+nothing is not supported; "
            "use sqlite:///path.sqlite3 or postgresql+psycopg://user@host/db",
        ),
        (
            "not a url",
            "database_url: cannot parse 'not a url'; use sqlite:///path.sqlite3 or postgresql+psycopg://user@host/db",
        ),
    ],
)
def test_unsupported_or_garbage_urls_are_one_line_with_the_password_masked(
    tmp_path: Path, url: str, message: str
) -> None:
    assert lists_with(tmp_path, url) == message


# --- export that spreadsheets cannot run --------------------------------------------------------

FORMULAS = {
    "=x@example.org": '=HYPERLINK("http://evil.example/","click")',
    "+x@example.org": "+1+2",
    "-x@example.org": "-2+3",
    "at@example.org": "@SUM(A1:A2)",
    "quoted@example.org": "'=already quoted",
    "plain@example.org": "Ana O'Neil",
}


def test_export_defuses_formulas_in_every_cell_and_import_gives_back_the_values(
    run: Callable[..., Result], engine: Engine, tmp_path: Path
) -> None:
    create_list(engine, "staff")
    attributes = {"=cmd": "-5", "phone": "+43 1 234"}
    for address, name in FORMULAS.items():
        add_subscriber(engine, "staff", address, name=name, attributes=attributes)
    add_subscriber(engine, "staff", "tab@example.org")
    with engine.begin() as conn:  # stored before names were checked: a tab, or a CR, may start one
        conn.execute(sa.update(subscribers).where(subscribers.c.email == "tab@example.org").values(name="\t=1+1"))
    exported = run("subscribers", "export", "staff").stdout
    cells = list(csv.reader(io.StringIO(exported)))
    assert cells == [
        ["email", "name", "'=cmd", "phone"],
        ["'+x@example.org", "'+1+2", "'-5", "'+43 1 234"],
        ["'-x@example.org", "'-2+3", "'-5", "'+43 1 234"],
        ["'=x@example.org", '\'=HYPERLINK("http://evil.example/","click")', "'-5", "'+43 1 234"],
        ["at@example.org", "'@SUM(A1:A2)", "'-5", "'+43 1 234"],
        ["plain@example.org", "Ana O'Neil", "'-5", "'+43 1 234"],
        ["quoted@example.org", "''=already quoted", "'-5", "'+43 1 234"],
        ["tab@example.org", "'\t=1+1", "", ""],
    ]
    for cell in (cell for row in cells for cell in row):
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell

    without_tab = exported.replace("tab@example.org,'\t=1+1,,\n", "")  # a tab in a name is refused on import now
    (tmp_path / "staff.csv").write_text(without_tab)
    run("lists", "create", "copy")
    result = run("subscribers", "import", "copy", "staff.csv")
    assert result.stdout == "staff.csv: 6 added, 0 updated, 0 unchanged, 0 invalid, 0 skipped\n"  # all unchanged
    copied = {member.email: (member.name, member.attributes) for member in mailable_subscribers(engine, "copy")}
    assert copied == {address: (name, attributes) for address, name in FORMULAS.items()}
    assert run("subscribers", "export", "copy").stdout == without_tab


@pytest.mark.parametrize(
    "value", ["=1", "+1", "-1", "@a", "\t=1", "\r=1", "'=1", "''+1", "'", "'x", "x=1", "", "a-b", "- ", "''"]
)
def test_defusing_round_trips_every_value(value: str) -> None:
    assert from_spreadsheet(spreadsheet_safe(value)) == value
    assert not spreadsheet_safe(value).startswith(("=", "+", "-", "@", "\t", "\r"))


def test_a_merge_key_inside_an_unknown_field_is_a_plain_unknown_field_error(tmp_path: Path) -> None:
    result = check(tmp_path, MINIMAL + "extra: &x\n  b: 1\nmore:\n  <<: *x\n")
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert "extra: unknown field" in result.stderr and "more: unknown field" in result.stderr
