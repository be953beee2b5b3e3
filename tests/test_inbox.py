"""How an issue fares in the inbox: its SpamAssassin score, the preview line, dark mode and Apple meta, Outlook blocks.

The spam score comes from the real `spamassassin` binary (Debian's 4.x, local rules only: `-L`)
on the .eml files `mailer send --dry-run` writes for each seed issue.
"""

from __future__ import annotations

import email.policy
import re
import shutil
import subprocess
from email.parser import BytesParser
from pathlib import Path

import pytest
from lxml import html as lxml_html

from mailer.audience.database import open_database
from mailer.audience.lists import add_subscriber, create_list
from mailer.compose.model import Issue
from mailer.compose.render import PLACEHOLDERS, RenderedIssue, _mjml_to_html, email_context, inline_css
from mailer.compose.template_errors import render_template
from mailer.compose.templates import default_templates_dir, environment
from mailer.settings import Settings
from tests.cli_helpers import run_cli
from tests.conftest import SECRET, SEED_ISSUES, missing_service

Seed = tuple[Issue, RenderedIssue]

MAX_SCORE = 1.0
CONTENT_RULES = {
    "FUZZY_WALLET": "'Valletta' (the Valletta Action Plan) reads as an obfuscated 'wallet': the author's words",
}
"""Rules hit by what the author wrote, not by the template: accepted while the total stays within MAX_SCORE."""
STRUCTURAL_RULES = {
    "HTML_MESSAGE": "0 points: the message has an HTML part",
    "NO_RECEIVED": "0 points: a dry run's .eml has not passed through a relay yet",
    "NO_RELAYS": "0 points: likewise",
}
"""Informational rules that score nothing and say nothing about the template."""
FILLER = "\u034f\u200c\u00a0"
"""`&#847;&zwnj;&nbsp;`: invisible, but enough for a mail client to stop filling the preview with the body."""
PREVIEW_LENGTH = 150
OUTLOOK_SEAM = re.compile(r"<!\[endif\]-->\s*<!--\[if mso \| IE\]>")


def dry_run_eml(workdir: Path, slug: str) -> bytes:
    """The message `mailer send --dry-run` writes for a subscriber of list 'staff'."""
    database_url = f"sqlite:///{workdir / 'mailer.sqlite3'}"
    engine = open_database(database_url)
    create_list(engine, "staff", "All staff")
    add_subscriber(engine, "staff", "ana@example.org", name="Ana")
    engine.dispose()
    env = {
        "MAILER_DATABASE_URL": database_url,
        "MAILER_SENDER": "ICMPD Newsletter <newsletter@icmpd.org>",
        "MAILER_UNSUBSCRIBE_SECRET": SECRET,
    }
    result = run_cli("send", f"issues/{slug}.yaml", "--list", "staff", "--dry-run", "-o", "out", cwd=workdir, env=env)
    assert result.exit_code == 0, result.output
    [eml] = (workdir / "out").glob("*.eml")
    return eml.read_bytes()


def spamassassin(message: bytes, home: Path) -> tuple[float, set[str]]:
    """Score and rule names from `spamassassin -t -L`: local rules, no network, no Bayes, nothing written to ~."""
    binary = shutil.which("spamassassin")
    if binary is None:
        missing_service(
            "spamassassin is not installed (apt-get install spamassassin; .ci/run installs it): spam score not checked"
        )
    prefs = home / "user_prefs"
    prefs.write_text("use_bayes 0\nbayes_auto_learn 0\n", encoding="utf-8")
    checked = subprocess.run(
        [binary, "-t", "-L", "-p", str(prefs)],
        input=message,
        capture_output=True,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        timeout=120,
        check=True,
    )
    status = str(BytesParser(policy=email.policy.default).parsebytes(checked.stdout)["X-Spam-Status"])
    found = re.search(r"score=(-?[\d.]+) .*tests=(\S*)", re.sub(r",\s+", ",", " ".join(status.split())))
    assert found, f"no score in X-Spam-Status: {status!r}\n{checked.stderr.decode()}"
    return float(found[1]), set(found[2].rstrip(",").split(",")) - {"none", ""}


@pytest.mark.parametrize("slug", SEED_ISSUES)
def test_spamassassin_scores_a_real_message_at_most_1_and_only_for_content(
    slug: str, workdir: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    score, rules = spamassassin(dry_run_eml(workdir, slug), home)
    assert "HTML_MESSAGE" in rules, f"{slug}: the rule list was not read whole: {sorted(rules)}"
    unexpected = rules - CONTENT_RULES.keys() - STRUCTURAL_RULES.keys()
    assert not unexpected, f"{slug}: SpamAssassin rules not explained by the issue's content: {sorted(unexpected)}"
    assert score <= MAX_SCORE, f"{slug}: score {score} over {MAX_SCORE} (rules: {sorted(rules)})"


def test_preheader_is_hidden_everywhere_and_followed_by_invisible_filler(seed: Seed) -> None:
    issue, result = seed
    body = lxml_html.fromstring(result.email_html).xpath("//body")[0]
    preheader, wrapper = body.xpath("div")[:2]
    filler = wrapper.xpath("div")[0]
    for hidden in (preheader, filler):
        style = hidden.get("style").replace(" ", "")
        assert "display:none" in style and "mso-hide:all" in style
        assert "color:" not in style  # white-on-grey text is SpamAssassin's HTML_FONT_LOW_CONTRAST
    assert preheader.text_content() == issue.preheader
    units, rest = divmod(len(filler.text_content()), len(FILLER))
    assert rest == 0 and filler.text_content() == FILLER * units
    assert len(issue.preheader) + units >= PREVIEW_LENGTH
    assert FILLER not in result.web_html  # a web page has no inbox preview


def test_head_has_dark_mode_and_apple_mail_settings(seed: Seed) -> None:
    _, result = seed
    for html in (result.email_html, result.web_html):
        doc = lxml_html.fromstring(html)
        meta = {
            name: doc.xpath(f"//head/meta[@name='{name}']/@content")
            for name in ("color-scheme", "supported-color-schemes", "format-detection")
        }
        assert meta == {
            "color-scheme": ["light dark"],
            "supported-color-schemes": ["light dark"],
            "format-detection": ["telephone=no, date=no, address=no, email=no"],
        }
        head_css = " ".join(" ".join(style.text.split()) for style in doc.xpath("//head/style") if style.text)
        assert ":root { color-scheme: light dark; supported-color-schemes: light dark; }" in head_css
        assert "a[x-apple-data-detectors] { color: inherit !important; text-decoration: none !important;" in head_css


def unmerged_email_html(issue: Issue, slug: str, settings: Settings) -> str:
    """The email as mjml-python and premailer alone make it, without render.py's post-processing."""
    templates_dir = default_templates_dir()
    source = render_template(
        environment(templates_dir),
        "issue.mjml",
        web=False,
        recipient=PLACEHOLDERS,
        image_base="",
        **email_context(issue, slug, settings),
    )
    return inline_css(_mjml_to_html(source), (templates_dir / "inline.css").read_text(encoding="utf-8"))


def test_adjacent_outlook_blocks_are_merged_as_stock_mjml_does(seed: Seed, settings: Settings) -> None:
    issue, result = seed
    slug = f"{issue.date:%Y-%m}"
    for html in (result.email_html, result.web_html):
        assert "<!--[if mso | IE]>" in html
        assert not OUTLOOK_SEAM.search(html)
    unmerged = unmerged_email_html(issue, slug, settings)
    assert len(OUTLOOK_SEAM.findall(unmerged)) > 50
    saved = len(unmerged.encode()) - len(result.email_html.encode())
    assert saved > 1000, f"{slug}: merging saved {saved} bytes"
    assert len(result.email_html.encode()) < 90_000
