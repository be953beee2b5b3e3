"""Personalisation that cannot go wrong: placeholders checked where they are written, and every recipient greeted properly.

`mailer check` and `mailer render` point at a mistaken placeholder; messages sent to a real SMTP server
greet a recipient without a name with the fallback, the default greeting, or no line at all, never "Dear ,".
"""

from __future__ import annotations

import asyncio
import email
import html
import shutil
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest
import sqlalchemy as sa
from lxml import html as lxml_html

from mailer.audience.database import open_database, subscribers
from mailer.audience.lists import add_subscriber, create_list
from mailer.compose.load import load_issue
from mailer.compose.placeholders import fill, recipient_values
from mailer.compose.render import render_issue
from mailer.compose.templates import default_templates_dir
from mailer.delivery.send import send_to_list
from mailer.settings import Settings
from tests.cli_helpers import run_cli
from tests.conftest import ROOT
from tests.smtp_server import SMTPServer

HEAD = """\
title: March 2016 Monthly Update
date: 2016-03-10
preheader: What happened in March
"""
BODY = """\
news:
  stories:
    - title: A story
      paragraphs:
        - The first paragraph.
"""


def content_folder(tmp_path: Path, text: str, name: str = "2016-03.yaml") -> Path:
    """An issue file beside the repository's mailer.toml; returns its path."""
    tmp_path.mkdir(exist_ok=True)
    shutil.copy(ROOT / "mailer.toml", tmp_path / "mailer.toml")
    (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path / name


# --- mistakes, where they are written -----------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "column"),
    [
        ("greeting: Dear {nmae},", 16),
        ("greeting: 'It''s you, {nmae}'", 23),
        ('greeting: "Caf\\u00e9 \\"friends\\" {nmae}"', 34),
        ("greeting: >-\n  Dear {nmae},", 11),  # a block scalar: the place of the value
        ("greeting: Dear\n  {nmae},", 11),  # a plain scalar over two lines: the place of the value
    ],
)
def test_check_points_at_an_unknown_placeholder_and_suggests_the_right_one(
    tmp_path: Path, line: str, column: int
) -> None:
    content_folder(tmp_path, HEAD + line + "\n" + BODY, "issue.yaml")
    result = run_cli("check", "issue.yaml", cwd=tmp_path)
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == f"issue.yaml:4:{column}: greeting: unknown placeholder {{nmae}}; did you mean {{name}}?\n"


def test_render_refuses_the_same_mistake_and_writes_nothing(tmp_path: Path) -> None:
    content_folder(tmp_path, HEAD + "greeting: Dear {nmae|colleague},\n" + BODY)
    result = run_cli("render", "2016-03.yaml", cwd=tmp_path)
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == (
        "2016-03.yaml:4:16: greeting: unknown placeholder {nmae|colleague}; did you mean {name|colleague}?\n"
    )
    assert not (tmp_path / "build").exists()


def test_braces_in_the_greeting_are_placeholders_or_doubled(tmp_path: Path) -> None:
    """`{{` and `}}` are literal braces; every other brace must belong to a placeholder, all mistakes at once."""
    content_folder(tmp_path, HEAD + "greeting: 'Dear {name|} {{name}} {name'\n" + BODY, "issue.yaml")
    result = run_cli("check", "issue.yaml", cwd=tmp_path)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "issue.yaml:4:17: greeting: {name|} has no fallback after |; write one such as {name|colleague}, or {name}",
        "issue.yaml:4:25: greeting: {{name}} would show as {name} to every reader; write {name} "
        "(double braces are literal braces)",
        "issue.yaml:4:34: greeting: a { that is not closed; write {name}, or {{ for a literal brace",
    ]
    content_folder(tmp_path, HEAD + "greeting: Dear {name} {{team}},\n" + BODY)
    assert run_cli("render", "2016-03.yaml", cwd=tmp_path).exit_code == 0
    assert "\nDear {{name}} {team},\n" in (tmp_path / "build" / "2016-03" / "email.txt").read_text()


def test_placeholders_outside_the_greeting_are_errors(tmp_path: Path) -> None:
    """Nothing fills them in there, so every reader would see them; braces that read as no placeholder are text."""
    text = HEAD.replace("Update", "Update for {name}") + BODY.replace("A story", "The {EU} summit, {{email}}")
    content_folder(tmp_path, text, "issue.yaml")
    result = run_cli("check", "issue.yaml", cwd=tmp_path)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "issue.yaml:1:38: title: {name} looks like a placeholder; placeholders work only in greeting, "
        "and here every reader would see it as written",
        "issue.yaml:6:31: news.stories[0].title: {{email}} looks like a placeholder; placeholders work only in "
        "greeting, and here every reader would see it as written",
    ]


def test_render_output_shows_which_recipients_get_which_line(tmp_path: Path) -> None:
    """email.txt and email.html keep the placeholders: `{{name|fallback}}`, and sections for a line some recipients get."""
    content_folder(tmp_path, HEAD + "greeting: Dear {name|colleague},\n" + BODY)
    assert run_cli("render", "2016-03.yaml", cwd=tmp_path).exit_code == 0
    out = tmp_path / "build" / "2016-03"
    assert "\n\nDear {{name|colleague}},\n" in (out / "email.txt").read_text()
    assert (
        '<p class="greeting" style="margin:0 0 10px">Dear {{name|colleague}},</p>' in (out / "email.html").read_text()
    )

    content_folder(tmp_path, HEAD + "greeting: Dear {name},\n" + BODY)
    result = run_cli("render", "2016-03.yaml", cwd=tmp_path, env={"MAILER_DEFAULT_GREETING": "Dear reader,"})
    assert result.exit_code == 0
    text = (out / "email.txt").read_text()
    assert "\n{{#name}}\nDear {{name}},\n{{/name}}{{^name}}\nDear reader,\n{{/name}}\n" in text
    assert "Dear" not in (out / "web.html").read_text()


# --- what recipients get ------------------------------------------------------------------------


def parts(data: bytes) -> tuple[str, str]:
    """The decoded text and HTML parts of a received message, with the line breaks a reader sees."""
    message = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    text, html_part = message.iter_parts()
    body = data.split(b"\r\n\r\n", 1)[1]
    assert max(len(line) for line in body.split(b"\r\n")) <= 76
    return text.get_content().replace("\r\n", "\n"), html_part.get_content().replace("\r\n", "\n")


def greetings(html_text: str) -> list[str]:
    return [p.text_content() for p in lxml_html.fromstring(html_text).find_class("greeting")]


def send_to_staff(
    tmp_path: Path,
    settings: Settings,
    server: SMTPServer,
    greeting: str,
    names: dict[str, str],
    *,
    default: str | None,
    body: str = BODY,
) -> dict[str, bytes]:
    """Send an issue with this greeting to a list of these people; what the server received, by address."""
    issue = content_folder(tmp_path, HEAD + f"greeting: {greeting}\n" + body)
    engine = open_database(settings.database_url)
    create_list(engine, "staff", "All staff")
    for address, name in names.items():
        add_subscriber(engine, "staff", address, name=name)
    with engine.begin() as conn:  # a name stored before names were cleaned on the way in: only spaces
        conn.execute(sa.update(subscribers).where(subscribers.c.email == "blank@example.org").values(name="   "))
    settings = settings.model_copy(update={"default_greeting": default, "issues_dir": issue.parent})
    summary = asyncio.run(send_to_list(engine, settings, issue, "staff"))
    engine.dispose()
    assert summary.sent == len(names)
    return {item.recipients[0]: item.data for item in server.recorder.messages}


PEOPLE = {"ana@example.org": "Ana", "nobody@example.org": "", "blank@example.org": ""}

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@sqlite_only
def test_a_fallback_greets_recipients_without_a_name_in_both_parts(
    tmp_path: Path, send_settings: Settings, smtp_server: SMTPServer
) -> None:
    received = send_to_staff(tmp_path, send_settings, smtp_server, "Dear {name|colleague},", PEOPLE, default="Hello,")
    for address, expected in [
        ("ana@example.org", "Dear Ana,"),
        ("nobody@example.org", "Dear colleague,"),
        ("blank@example.org", "Dear colleague,"),
    ]:
        text, html_text = parts(received[address])
        assert f"\n\n{expected}\n\n" in text
        assert greetings(html_text) == [expected]
        assert "Hello," not in text + html_text
        assert "{{" not in text + html_text and "{name" not in text + html_text


@sqlite_only
def test_without_a_fallback_the_default_greeting_replaces_the_whole_line(
    tmp_path: Path, send_settings: Settings, smtp_server: SMTPServer
) -> None:
    received = send_to_staff(
        tmp_path, send_settings, smtp_server, "Dear {name}, welcome back", PEOPLE, default="Dear <reader> & friend,"
    )
    text, html_text = parts(received["ana@example.org"])
    assert "\n\nDear Ana, welcome back\n\n" in text and "Dear <reader>" not in text
    assert greetings(html_text) == ["Dear Ana, welcome back"]
    for address in ("nobody@example.org", "blank@example.org"):
        text, html_text = parts(received[address])
        assert "\n\nDear <reader> & friend,\n\n" in text and "welcome back" not in text
        assert greetings(html_text) == ["Dear <reader> & friend,"]
        assert "Dear &lt;reader&gt; &amp; friend," in html_text


@sqlite_only
def test_without_a_default_greeting_a_nameless_recipient_gets_no_line_and_no_gap(
    tmp_path: Path, send_settings: Settings, smtp_server: SMTPServer
) -> None:
    """The message reads exactly like the same issue without a greeting: no empty paragraph, no blank lines."""
    received = send_to_staff(tmp_path, send_settings, smtp_server, "Dear {name},", PEOPLE, default=None)
    text, html_text = parts(received["ana@example.org"])
    assert "\n\nDear Ana,\n\n" in text and greetings(html_text) == ["Dear Ana,"]

    without = render_issue(load_issue(content_folder(tmp_path / "without", HEAD + BODY)), "2016-03", send_settings)
    for address in ("nobody@example.org", "blank@example.org"):
        message = email.message_from_bytes(received[address], policy=policy.default)
        unsubscribe = str(message["List-Unsubscribe"]).strip("<>")
        text, html_text = parts(received[address])
        assert "Dear" not in text + html_text
        assert text == without.text.replace("{{email}}", address).replace("{{unsubscribe_url}}", unsubscribe)
        assert html_text == without.email_html.replace("{{email}}", address).replace(
            "{{unsubscribe_url}}", html.escape(unsubscribe)
        )


@sqlite_only
def test_a_name_is_text_in_html_and_never_breaks_quoted_printable(
    tmp_path: Path, send_settings: Settings, smtp_server: SMTPServer
) -> None:
    tricky = 'Ana <script>alert(1)</script> & "Bob" ' + "Øster" * 30
    received = send_to_staff(
        tmp_path, send_settings, smtp_server, "Dear {name|colleague},", {"ana@example.org": tricky}, default=None
    )
    text, html_text = parts(received["ana@example.org"])  # parts() also checks every line is at most 76 octets
    assert f"\n\nDear {tricky},\n\n" in text
    assert greetings(html_text) == [f"Dear {tricky},"]
    assert (
        "<script>" not in html_text and "Ana &lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;Bob&quot;" in html_text
    )


@sqlite_only
def test_fill_reads_exactly_like_the_sent_message(
    tmp_path: Path, send_settings: Settings, smtp_server: SMTPServer
) -> None:
    """placeholders.fill (for a preview) and the bytes sending makes agree for every kind of recipient."""
    names = {**PEOPLE, "bob@example.org": "Bob <b>&</b>"}
    received = send_to_staff(tmp_path, send_settings, smtp_server, "Dear {name}, hi {name|you}", names, default="Hi,")
    settings = send_settings.model_copy(update={"default_greeting": "Hi,"})
    rendered = render_issue(load_issue(tmp_path / "2016-03.yaml"), "2016-03", settings)
    for address, name in {**names, "blank@example.org": "   "}.items():
        message = email.message_from_bytes(received[address], policy=policy.default)
        values = recipient_values(address, name, str(message["List-Unsubscribe"]).strip("<>"))
        text, html_text = parts(received[address])
        assert (text, html_text) == (fill(rendered.text, values), fill(rendered.email_html, values, html.escape))


def test_a_default_greeting_with_braces_is_refused_where_it_is_set(tmp_path: Path) -> None:
    """It is what recipients without a name get, so nothing could fill it in: `mailer check` says so already."""
    content_folder(tmp_path, HEAD + "greeting: Dear {name},\n" + BODY)
    for value in ("Dear {name},", "Dear {{EU}} member,"):
        result = run_cli("check", "2016-03.yaml", cwd=tmp_path, env={"MAILER_DEFAULT_GREETING": value})
        assert (result.exit_code, result.stderr) == (
            1,
            f"MAILER_DEFAULT_GREETING='{value}': default_greeting: is the line for recipients without a name, so it "
            "takes no placeholders or braces; write it as they should read it, e.g. 'Dear reader,'\n",
        )
    (tmp_path / "mailer.toml").write_text(
        'default_greeting = "Hi {name}"\n' + (tmp_path / "mailer.toml").read_text(), encoding="utf-8"
    )
    in_file = run_cli("render", "2016-03.yaml", cwd=tmp_path)
    assert in_file.exit_code == 1
    assert in_file.stderr.startswith("mailer.toml:1: default_greeting: is the line for recipients without a name")


def test_templates_copied_before_fallbacks_are_refused_not_sent(tmp_path: Path) -> None:
    """An old copy in templates_dir would mail `Dear {name|colleague},` as written: the render stops instead."""
    custom = tmp_path / "templates"
    shutil.copytree(default_templates_dir(), custom)
    header = custom / "sections" / "header.mjml"
    start = header.read_text().index("{# The greeting")
    header.write_text(
        header.read_text()[:start]
        + '{% if issue.greeting and not web %}\n<mj-section><mj-column><mj-text><p>{{ issue.greeting | replace("{name}", '
        "recipient.name) }}</p></mj-text></mj-column></mj-section>\n{% endif %}\n"
    )
    content_folder(tmp_path, HEAD + "greeting: Dear {name|colleague},\n" + BODY)
    result = run_cli("render", "2016-03.yaml", cwd=tmp_path, env={"MAILER_TEMPLATES_DIR": str(custom)})
    assert (result.exit_code, result.stderr) == (
        1,
        f"{custom}: issue.mjml does not write the greeting from `greetings`, so readers would see its placeholders "
        "as written; write it as templates/email/sections/header.mjml and issue.txt do\n",
    )


@sqlite_only
def test_content_cannot_forge_a_placeholder_through_markup_escapes_or_branding(
    tmp_path: Path, send_settings: Settings, smtp_server: SMTPServer
) -> None:
    """`\\{\\{name\\}\\}` passes the check as text and markup makes it `{{name}}`: it must stay text for everyone."""
    body = BODY.replace(
        "The first paragraph.",
        "'Write \\{\\{name\\}\\} or \\{\\{email\\}\\}; sections close with \\{\\{/name\\}\\}.'",
    )
    branding = send_settings.branding.model_copy(
        update={"full_name": "Centre for {{name}}", "address": ["{{/name}}", "{{unsubscribe_url}}"]}
    )
    settings = send_settings.model_copy(update={"branding": branding})
    assert run_cli("check", str(content_folder(tmp_path, HEAD + body)), cwd=tmp_path).exit_code == 0
    received = send_to_staff(tmp_path, settings, smtp_server, "Dear {name|colleague},", PEOPLE, default=None, body=body)
    for address in ("ana@example.org", "nobody@example.org"):
        text, html_text = parts(received[address])
        for part in (text, " ".join(lxml_html.fromstring(html_text).text_content().split())):
            shown = part.replace("\u200b", "")
            assert "Write {{name}} or {{email}}; sections close with {{/name}}." in shown, address
            assert "Centre for {{name}}" in shown
            assert (
                "Write Ana" not in shown and "Centre for Ana" not in shown and address not in shown.split("sent to")[0]
            )


@sqlite_only
def test_a_name_that_shows_nothing_is_no_name(tmp_path: Path, send_settings: Settings, smtp_server: SMTPServer) -> None:
    invisible = {
        "zwsp@example.org": "\u200b",
        "bom@example.org": "\ufeff\u200d",
        "filler@example.org": "\u3164",
        "braille@example.org": "\u2800",
        "accent@example.org": "\u0301",
    }
    received = send_to_staff(
        tmp_path,
        send_settings,
        smtp_server,
        "Dear {name|colleague},",
        {"ana@example.org": "Ana", **invisible},
        default=None,
    )
    for address in invisible:
        text, html_text = parts(received[address])
        assert "\n\nDear colleague,\n\n" in text, address
        assert greetings(html_text) == ["Dear colleague,"], address
    assert greetings(parts(received["ana@example.org"])[1]) == ["Dear Ana,"]
