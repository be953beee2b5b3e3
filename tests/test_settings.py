from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from mailer.config_report import describe_settings
from mailer.errors import ConfigError
from mailer.settings import load_settings, mask_url_password
from mailer.toml_lines import toml_key_lines
from tests.cli_helpers import run_cli

SECRET = "s3cret-Pa55word-that-must-never-show"
UNSUBSCRIBE_SECRET = "u" * 31 + "-unsubscribe-key"


@pytest.fixture(autouse=True)
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project folder as the working directory, with no MAILER_* variables from the outside."""
    for name in list(os.environ):
        if name.upper().startswith("MAILER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_config(toml: str = 'public_url = "https://news.example.org"\n', dotenv: str | None = None) -> None:
    Path("mailer.toml").write_text(toml, encoding="utf-8")
    if dotenv is not None:
        Path(".env").write_text(dotenv, encoding="utf-8")


def config_error(**overrides: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(**overrides)
    return str(caught.value)


def test_each_layer_beats_the_ones_below(monkeypatch: pytest.MonkeyPatch) -> None:
    write_config('public_url = "https://news.example.org"\n')
    assert load_settings().branding.name == "Newsletter"
    assert load_settings().smtp_host == "localhost"

    write_config('public_url = "https://news.example.org"\nsmtp_host = "toml.example.org"\n[branding]\nname = "Toml"\n')
    assert (load_settings().branding.name, load_settings().smtp_host) == ("Toml", "toml.example.org")

    Path(".env").write_text("MAILER_BRANDING__NAME=DotEnv\nMAILER_SMTP_HOST=dotenv.example.org\n")
    assert (load_settings().branding.name, load_settings().smtp_host) == ("DotEnv", "dotenv.example.org")

    monkeypatch.setenv("MAILER_BRANDING__NAME", "Env")
    monkeypatch.setenv("MAILER_SMTP_HOST", "env.example.org")
    assert (load_settings().branding.name, load_settings().smtp_host) == ("Env", "env.example.org")

    settings = load_settings(smtp_host="flag.example.org", branding={"name": "Flag"})
    assert (settings.branding.name, settings.smtp_host) == ("Flag", "flag.example.org")
    assert settings.public_url == "https://news.example.org"


def test_describe_settings_names_every_value_and_where_it_came_from(monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(
        'public_url = "https://news.example.org"\n'
        'smtp_host = "mail.example.org"\n'
        'sender = "ICMPD Newsletter <newsletter@icmpd.org>"\n'
        "[branding]\n"
        'name = "Toml"\n'
        'full_name = "From the config file"\n'
        'address = ["Gonzagagasse 1", "1010 Vienna, Austria"]\n'
        "[branding.colours]\n"
        'primary = "#111111"\n'
        "[[branding.social]]\n"
        'label = "ICMPD on Twitter"\n'
        'url = "https://twitter.com/ICMPD"\n'
        'icon = "https://www.icmpd.org/twitter.png"\n',
        dotenv="MAILER_BRANDING__NAME=DotEnv\nMAILER_SMTP_USERNAME=newsletter\nMAILER_SMTP_TIMEOUT=12.5\n",
    )
    monkeypatch.setenv("MAILER_BRANDING__COLOURS__ACCENT", "#222222")
    monkeypatch.setenv("MAILER_SMTP_TLS", "tls")
    monkeypatch.setenv("MAILER_SMTP_PASSWORD", SECRET)
    monkeypatch.setenv("MAILER_SMTP_TIMEOUT", "5")

    assert describe_settings(reply_to="office@icmpd.org", templates_dir=Path("my-templates")) == [
        'public_url = "https://news.example.org"  (mailer.toml)',
        'branding.name = "DotEnv"  (.env)',
        'branding.full_name = "From the config file"  (mailer.toml)',
        "branding.website = null  (default)",
        "branding.logo = null  (default)",
        'branding.colours.primary = "#111111"  (mailer.toml)',
        'branding.colours.accent = "#222222"  (environment (MAILER_BRANDING__COLOURS__ACCENT))',
        'branding.colours.text = "#222222"  (default)',
        'branding.colours.muted = "#666666"  (default)',
        'branding.colours.background = "#f2f2f2"  (default)',
        'branding.colours.content = "#ffffff"  (default)',
        'branding.font_family = "Arial, Helvetica, sans-serif"  (default)',
        'branding.address = ["Gonzagagasse 1", "1010 Vienna, Austria"]  (mailer.toml)',
        'branding.social = [{"label": "ICMPD on Twitter", "url": "https://twitter.com/ICMPD", "icon": "https://www.icmpd.org/twitter.png"}]  (mailer.toml)',
        'branding.links_heading = "Connect with us"  (default)',
        'issues_dir = "issues"  (default)',
        'templates_dir = "my-templates"  (flag)',
        'database_url = "sqlite:///mailer.sqlite3"  (default)',
        'smtp_host = "mail.example.org"  (mailer.toml)',
        "smtp_port = 465  (default)",
        'smtp_tls = "tls"  (environment (MAILER_SMTP_TLS))',
        'smtp_username = "newsletter"  (.env)',
        "smtp_password = ********  (environment (MAILER_SMTP_PASSWORD))",
        "smtp_timeout = 5.0  (environment (MAILER_SMTP_TIMEOUT))",
        "smtp_ca_file = null  (default)",
        "smtp_tls_verify = true  (default)",
        "smtp_helo_name = null  (default)",
        "special_use_domains = []  (default)",
        "smtp_pool_size = 8  (default)",
        "smtp_pipelining = true  (default)",
        "rate_per_second = 0.0  (default)",
        "rate_per_hour = 0  (default)",
        "max_attempts = 5  (default)",
        "retry_base_delay = 2.0  (default)",
        "give_up_after = 600.0  (default)",
        "unsubscribe_mailto = null  (default)",
        "default_greeting = null  (default)",
        'sender = "ICMPD Newsletter <newsletter@icmpd.org>"  (mailer.toml)',
        'reply_to = "office@icmpd.org"  (flag)',
        "unsubscribe_secret = (not set)  (default)",
        "confirm_hours = 48.0  (default)",
        "subscribe_per_ip_per_hour = 10  (default)",
        "confirm_per_address_per_day = 3  (default)",
        "claim_lease_seconds = 60.0  (default)",
        "max_issue_bytes = 1000000  (default)",
        "bounce_address = null  (default)",
        "bounce_mailbox = null  (default)",
        "bounce_password = (not set)  (default)",
        "bounce_ca_file = null  (default)",
        "bounce_tls_verify = true  (default)",
        "bounce_handled_folder = null  (default)",
        "bounce_poll_seconds = 60.0  (default)",
        "soft_bounce_limit = 3  (default)",
        'images = "hosted"  (default)',
        "dkim_key_file = null  (default)",
        "dkim_selector = null  (default)",
        "link_check_timeout = 10.0  (default)",
        "check_links_before_send = false  (default)",
    ]


def test_describe_settings_names_the_variable_holding_a_whole_table_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    write_config()
    monkeypatch.setenv("MAILER_BRANDING", '{"name": "Json", "colours": {"primary": "#333333"}}')
    lines = describe_settings()
    assert 'branding.name = "Json"  (environment (MAILER_BRANDING))' in lines
    assert 'branding.colours.primary = "#333333"  (environment (MAILER_BRANDING))' in lines
    assert 'branding.colours.accent = "#e69138"  (default)' in lines


def test_describe_settings_names_the_config_file_it_read(monkeypatch: pytest.MonkeyPatch) -> None:
    Path("conf").mkdir()
    Path("conf/news.toml").write_text('public_url = "https://other.example.org"\n')
    assert describe_settings(Path("conf/news.toml"))[0] == 'public_url = "https://other.example.org"  (conf/news.toml)'

    monkeypatch.setenv("MAILER_CONFIG", "conf/news.toml")
    assert describe_settings()[0] == 'public_url = "https://other.example.org"  (conf/news.toml)'


@pytest.mark.parametrize("source", ["flag", "environment", ".env", "mailer.toml"])
def test_secrets_never_show_whatever_their_source(source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {
        "smtp_password": SECRET,
        "unsubscribe_secret": UNSUBSCRIBE_SECRET,
        "database_url": f"postgresql+psycopg://mailer:{SECRET}@db.example.org:5432/mailer",
    }
    toml = 'public_url = "https://news.example.org"\n'
    overrides: dict[str, Any] = {}
    if source == "flag":
        overrides = dict(secrets)
    elif source == "environment":
        for name, value in secrets.items():
            monkeypatch.setenv(f"MAILER_{name.upper()}", value)
    elif source == ".env":
        Path(".env").write_text("".join(f"MAILER_{name.upper()}={value}\n" for name, value in secrets.items()))
    else:
        toml += "".join(f'{name} = "{value}"\n' for name, value in secrets.items())
    write_config(toml)

    lines = describe_settings(**overrides)
    settings = load_settings(**overrides)
    assert settings.smtp_password is not None and settings.smtp_password.get_secret_value() == SECRET
    for shown in ("\n".join(lines), repr(settings), str(settings)):
        assert SECRET not in shown
        assert SECRET[:8] not in shown and SECRET[-8:] not in shown
        assert UNSUBSCRIBE_SECRET[-12:] not in shown

    def where(name: str) -> str:
        return f"environment (MAILER_{name.upper()})" if source == "environment" else source

    assert f"smtp_password = ********  ({where('smtp_password')})" in lines
    assert f"unsubscribe_secret = ********  ({where('unsubscribe_secret')})" in lines
    masked_url = '"postgresql+psycopg://mailer:********@db.example.org:5432/mailer"'
    assert f"database_url = {masked_url}  ({where('database_url')})" in lines
    assert "database_url='postgresql+psycopg://mailer:********@db.example.org:5432/mailer'" in repr(settings)


def test_a_short_unsubscribe_secret_is_refused_without_echoing_it() -> None:
    write_config()
    message = config_error(unsubscribe_secret="too-short-" + SECRET[:20])
    assert message == (
        "mailer.toml: unsubscribe_secret: must be at least 32 characters; "
        "make one with python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
    )
    assert load_settings(unsubscribe_secret="x" * 32).unsubscribe_secret is not None


def test_clear_text_smtp_is_refused_for_a_remote_host() -> None:
    write_config('public_url = "https://news.example.org"\nsmtp_host = "mail.example.org"\nsmtp_tls = "none"\n')
    expected = "mailer.toml: smtp_tls = none sends passwords and mail in clear text; it is allowed only for localhost"
    assert config_error() == expected
    with pytest.raises(ConfigError) as caught:
        describe_settings()
    assert str(caught.value) == expected


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "::1"])
def test_clear_text_smtp_is_allowed_for_localhost(host: str) -> None:
    write_config()
    settings = load_settings(smtp_host=host, smtp_tls="none")
    assert (settings.smtp_tls, settings.smtp_port_effective) == ("none", 25)


@pytest.mark.parametrize(("tls", "port"), [("starttls", 587), ("tls", 465), ("none", 25)])
def test_the_smtp_port_follows_the_tls_mode_unless_set(tls: str, port: int) -> None:
    write_config(f'public_url = "https://news.example.org"\nsmtp_tls = "{tls}"\n')
    assert load_settings().smtp_port_effective == port
    assert f"smtp_port = {port}  (default)" in describe_settings()
    assert load_settings(smtp_port=2525).smtp_port_effective == 2525
    assert "smtp_port = 2525  (flag)" in describe_settings(smtp_port=2525)


@pytest.mark.parametrize("field", ["sender", "reply_to"])
def test_header_injection_is_refused(field: str) -> None:
    write_config(f'public_url = "https://news.example.org"\n{field} = "news@icmpd.org\\r\\nBcc: x@y"\n')
    assert config_error() == f"mailer.toml:2: {field}: must not contain line breaks (CR or LF)"
    write_config()
    assert config_error(**{field: "ICMPD <news@icmpd.org>\nBcc: x@y"}) == (
        f"mailer.toml: {field}: must not contain line breaks (CR or LF)"
    )


@pytest.mark.parametrize(
    ("sender", "message"),
    [
        (
            "not an address",
            "must be one address like 'Newsletter <news@example.org>' or 'news@example.org', got 'not an address'",
        ),
        (
            "news@icmpd.org, boss@icmpd.org",
            "must be one address like 'Newsletter <news@example.org>' or 'news@example.org', "
            "got 'news@icmpd.org, boss@icmpd.org'",
        ),
        (
            "ICMPD <news@icmpd.org> junk",
            "must be one address like 'Newsletter <news@example.org>' or 'news@example.org', "
            "got 'ICMPD <news@icmpd.org> junk'",
        ),
        (
            "ICMPD <news@icmpd>",
            "'news@icmpd' is not a valid email address: The part after the @-sign is not valid. It should have a period.",
        ),
        (
            "ICMPD <news..letter@icmpd.org>",
            "'news..letter@icmpd.org' is not a valid email address: An email address cannot have two periods in a row.",
        ),
    ],
)
def test_an_invalid_sender_is_refused(sender: str, message: str) -> None:
    write_config()
    assert config_error(sender=sender) == f"mailer.toml: sender: {message}"


@pytest.mark.parametrize(
    "mailbox", ["ICMPD Newsletter <newsletter@icmpd.org>", "newsletter@icmpd.org", '"ICMPD, Vienna" <office@icmpd.org>']
)
def test_a_valid_mailbox_is_kept_as_written(mailbox: str) -> None:
    write_config()
    settings = load_settings(sender=mailbox, reply_to=mailbox)
    assert (settings.sender, settings.reply_to) == (mailbox, mailbox)


def test_dkim_needs_both_the_key_and_the_selector() -> None:
    write_config()
    assert config_error(dkim_selector="news2024") == (
        "mailer.toml: dkim_key_file and dkim_selector go together; set both or neither"
    )
    settings = load_settings(dkim_selector="news2024", dkim_key_file=Path("dkim.pem"))
    assert (settings.dkim_selector, settings.dkim_key_file) == ("news2024", Path("dkim.pem"))


INTEGER = "Input should be a valid integer, unable to parse string as an integer"
COLOUR = "String should match pattern '^#[0-9a-fA-F]{6}$'"


def refused(*args: str, env: Mapping[str, str | None] | None = None) -> list[str]:
    """`mailer ARGS` in the project folder: it must fail with exit code 1, one line per problem, no traceback."""
    result = run_cli(*args, cwd=Path.cwd(), env=env)
    assert (result.exit_code, result.stdout) == (1, ""), result.output
    assert "Traceback" not in result.stderr
    return result.stderr.splitlines()


def test_a_bad_value_in_the_config_file_names_the_line_of_its_key() -> None:
    write_config(
        'public_url = "https://news.example.org"\n'
        "# the relay\n"
        'smtp_host = "mail.example.org"\n'
        'smtp_port = "abc"\n'
        'note = """\n'
        'smtp_port = "not a key: inside a string"\n'
        '"""\n'
        "[branding]\n"
        'name = "ICMPD"\n'
        "[branding.colours]\n"
        'accent = "#e69138"\n'
        'primary = "blue"\n'
        "[branding.logo]\n"
        'src = "https://www.icmpd.org/logo.png"\n'
        "[[branding.social]]\n"
        'label = "ICMPD on Twitter"\n'
        'url = "https://twitter.com/ICMPD"\n'
        'icon = "https://www.icmpd.org/twitter.png"\n'
        "[[branding.social]]\n"
        'label = "ICMPD on Facebook"\n'
        'url = "facebook.com/ICMPD"\n'
        'icon = "https://www.icmpd.org/facebook.png"\n'
    )
    assert refused("config") == [
        f"mailer.toml:4: smtp_port: {INTEGER}",
        "mailer.toml:5: note: unknown setting; no setting has a similar name",
        f"mailer.toml:12: branding.colours.primary: {COLOUR}",
        "mailer.toml:13: branding.logo.alt: required; set it in mailer.toml or MAILER_BRANDING__LOGO__ALT",
        "mailer.toml:21: branding.social[1].url: must be an absolute http(s) or mailto URL, got 'facebook.com/ICMPD'",
    ]


def test_a_config_file_that_is_not_toml_names_line_and_column() -> None:
    write_config('public_url = "https://news.example.org"\nsmtp_port = \n')
    assert refused("config") == ["mailer.toml:2:13: Invalid value"]


def test_a_bad_value_in_dotenv_names_its_line_and_variable() -> None:
    write_config(
        dotenv="# mailer and the database container share this file\n"
        "POSTGRES_PASSWORD=postgres\n"
        "\n"
        "MAILER_SMTP_HOST=mail.example.org\n"
        "export MAILER_SMTP_PORT=abc\n"
        'MAILER_BRANDING__COLOURS__PRIMARY="blue"\n'
        "MAILER_SPECIAL_USE_DOMAINS=test\n"
    )
    assert refused("check", "issues/2016-02.yaml") == [
        f".env:5: MAILER_SMTP_PORT: {INTEGER}",
        f".env:6: MAILER_BRANDING__COLOURS__PRIMARY: {COLOUR}",
        ".env:7: MAILER_SPECIAL_USE_DOMAINS: not valid JSON (Expecting value: line 1 column 1 (char 0)); "
        'lists and tables are written as JSON here, e.g. ["a", "b"] or {"name": "x"}',
    ]


def test_a_bad_environment_variable_is_named_with_its_value() -> None:
    write_config()
    env = {
        "MAILER_SMTP_PORT": "abc",
        "MAILER_SMTP_TLS": "start tls",
        "MAILER_BRANDING": '{"name": "Json", "colours": {"primary": "blue"}}',
        "MAILER_DATABASE_URL": "",
    }
    assert refused("check", "issues/2016-02.yaml", env=env) == [
        f"MAILER_BRANDING: branding.colours.primary: {COLOUR}",
        "MAILER_DATABASE_URL='': database_url: String should have at least 1 character",
        f"MAILER_SMTP_PORT=abc: smtp_port: {INTEGER}",
        "MAILER_SMTP_TLS='start tls': smtp_tls: Input should be 'starttls', 'tls' or 'none'",
    ]


@pytest.mark.parametrize(
    ("toml", "dotenv", "env", "expected"),
    [
        ("smtp_prot = 2525\n", None, {}, "mailer.toml:2: smtp_prot: unknown setting; did you mean 'smtp_port'?"),
        ("[branding]\nnmae = 'X'\n", None, {}, "mailer.toml:3: branding.nmae: unknown setting; did you mean 'name'?"),
        (
            "[branding.colours]\nprimray = '#111111'\n",
            None,
            {},
            "mailer.toml:3: branding.colours.primray: unknown setting; did you mean 'primary'?",
        ),
        ("[brandnig]\nname = 'X'\n", None, {}, "mailer.toml:2: brandnig: unknown setting; did you mean 'branding'?"),
        ("smtp.port = 2525\n", None, {}, "mailer.toml:2: smtp: unknown setting; did you mean 'smtp_port'?"),
        ("'smtp.prot' = 2525\n", None, {}, "mailer.toml:2: smtp.prot: unknown setting; did you mean 'smtp_port'?"),
        (
            "[smtp]\nhost = 'mail.example.org'\nport = 2525\n",
            None,
            {},
            "mailer.toml:2: smtp: unknown setting; did you mean 'smtp_host' or 'smtp_port'?",
        ),
        (
            '"branding.name" = "X"\n',
            None,
            {},
            "mailer.toml:2: branding.name: unknown setting; did you mean branding.name, without the quotes?",
        ),
        (
            "[[branding.social]]\nlabel = 'X'\nurl = 'https://x.org/'\nicon = 'https://x.org/i.png'\nicno = 'y'\n",
            None,
            {},
            "mailer.toml:6: branding.social[0].icno: unknown setting; did you mean 'icon'?",
        ),
        (
            "",
            "A=1\nMAILER_SMTP_PROT=2525\n",
            {},
            ".env:2: MAILER_SMTP_PROT: unknown setting; did you mean MAILER_SMTP_PORT?",
        ),
        (
            "",
            "MAILER_BRANDING__NMAE=X\n",
            {},
            ".env:1: MAILER_BRANDING__NMAE: unknown setting; did you mean MAILER_BRANDING__NAME?",
        ),
        ("", None, {"MAILER_SMTP_PROT": "2525"}, "MAILER_SMTP_PROT: unknown setting; did you mean MAILER_SMTP_PORT?"),
        (
            "",
            None,
            {"MAILER_BRANDING__COLOURS__PRIMRY": "#111111"},
            "MAILER_BRANDING__COLOURS__PRIMRY: unknown setting; did you mean MAILER_BRANDING__COLOURS__PRIMARY?",
        ),
        (
            "",
            None,
            {"MAILER_BRANDIN__NAME": "X"},
            "MAILER_BRANDIN__NAME: unknown setting; did you mean MAILER_BRANDING__NAME?",
        ),
        (
            "",
            None,
            {"MAILER_BRANDING__COLOURS__BORDER": "#111111"},
            "MAILER_BRANDING__COLOURS__BORDER: unknown setting; "
            "known settings: primary, accent, text, muted, background, content",
        ),
        (
            "",
            None,
            {"MAILER_DSN": "smtp://user:pass@mail.example.org"},
            "MAILER_DSN: unknown setting; no setting has a similar name; unset it if another program uses it",
        ),
    ],
)
def test_a_typo_in_any_source_is_an_error_with_the_nearest_name(
    toml: str, dotenv: str | None, env: dict[str, str | None], expected: str
) -> None:
    write_config('public_url = "https://news.example.org"\n' + toml, dotenv=dotenv)
    assert refused("config", env=env) == [expected]


def test_every_problem_of_every_source_is_reported_at_once() -> None:
    write_config('public_url = "https://news.example.org"\nsmtp_timeout = "soon"\n', dotenv="MAILER_SENDR=x@y.org\n")
    assert refused("config", env={"MAILER_SMTP_POOL_SIZE": "0"}) == [
        "MAILER_SMTP_POOL_SIZE=0: smtp_pool_size: Input should be from 1 to 100",
        ".env:1: MAILER_SENDR: unknown setting; did you mean MAILER_SENDER?",
        "mailer.toml:2: smtp_timeout: Input should be a valid number, unable to parse string as a number",
    ]


def test_dotenv_lines_for_other_programs_are_ignored() -> None:
    write_config(
        dotenv="# shared with docker compose\n"
        "DATABASE_PASSWORD=hunter2\n"
        "PATH=/nowhere\n"
        "export SECRET_KEY='abc'\n"
        "mailer=not-ours-either\n"
        "MAILERS=2\n"
        "MAILER_SMTP_HOST=dotenv.example.org\n"
    )
    result = run_cli("config", cwd=Path.cwd(), env={"MAILER_CONFIG": "mailer.toml"})
    assert (result.exit_code, result.stderr) == (0, "")
    assert 'smtp_host = "dotenv.example.org"  (.env)' in result.stdout.splitlines()
    assert 'public_url = "https://news.example.org"  (mailer.toml)' in result.stdout.splitlines()
    assert "hunter2" not in result.stdout and os.environ.get("DATABASE_PASSWORD") is None


SHORT_SECRET = SECRET[:20]
NUMBER_PASSWORD = "1234567890987654321"
TOO_SHORT = (
    "must be at least 32 characters; make one with python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "environment",
            [
                "MAILER_SMTP_PASSWORD__X: unknown setting; did you mean MAILER_SMTP_PASSWORD?",
                "MAILER_SMTP_PASWORD: unknown setting; did you mean MAILER_SMTP_PASSWORD?",
                f"MAILER_UNSUBSCRIBE_SECRET: unsubscribe_secret: {TOO_SHORT}",
            ],
        ),
        (
            ".env",
            [
                f".env:1: MAILER_UNSUBSCRIBE_SECRET: {TOO_SHORT}",
                ".env:2: MAILER_SMTP_PASWORD: unknown setting; did you mean MAILER_SMTP_PASSWORD?",
            ],
        ),
        (
            "mailer.toml",
            [
                f"mailer.toml:2: unsubscribe_secret: {TOO_SHORT}",
                "mailer.toml:3: smtp_password: Input should be a valid string",
                "mailer.toml:4: smtp_pasword: unknown setting; did you mean 'smtp_password'?",
            ],
        ),
    ],
)
def test_secrets_never_show_in_errors(source: str, expected: list[str]) -> None:
    """A short unsubscribe_secret, a password that is no string, a misspelt password setting: named, never echoed."""
    toml, dotenv, env = 'public_url = "https://news.example.org"\n', "", {}
    if source == "environment":
        env = {
            "MAILER_UNSUBSCRIBE_SECRET": SHORT_SECRET,
            "MAILER_SMTP_PASWORD": SECRET,
            "MAILER_SMTP_PASSWORD__X": SECRET,
        }
    elif source == ".env":
        dotenv = f"MAILER_UNSUBSCRIBE_SECRET={SHORT_SECRET}\nMAILER_SMTP_PASWORD={SECRET}\n"
    else:
        toml += f'unsubscribe_secret = "{SHORT_SECRET}"\nsmtp_password = {NUMBER_PASSWORD}\nsmtp_pasword = "{SECRET}"\n'
    write_config(toml, dotenv=dotenv)
    lines = refused("config", env=env)
    assert lines == expected
    for fragment in (SECRET[:8], SECRET[-8:], SHORT_SECRET[-8:], NUMBER_PASSWORD[:8]):
        assert fragment not in "\n".join(lines)


def test_config_reports_the_place_an_error_would_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """`mailer config` and the errors read the same sources: lower-case variables, a whole table as JSON."""
    write_config(dotenv="\nmailer_smtp_host=dotenv.example.org\n")
    monkeypatch.setenv("mailer_branding__name", "Env")
    monkeypatch.setenv("MAILER_CONFIG", "mailer.toml")
    lines = describe_settings()
    assert 'smtp_host = "dotenv.example.org"  (.env)' in lines
    assert 'branding.name = "Env"  (environment (mailer_branding__name))' in lines
    monkeypatch.setenv("mailer_branding__name", "")
    assert config_error() == "mailer_branding__name='': branding.name: String should have at least 1 character"


def test_toml_key_lines_follow_the_structure_not_the_text() -> None:
    text = (
        '"quoted key" = "a = b # not a comment"  # comment with a "quote\n'
        'ml = """\n'
        "[not_a_table]\n"
        'key = "x" \\"""\n'
        '"""\n'
        "arr = [\n"
        '  "a", # c\n'
        "  { x = 1, y = [3] },\n"
        "]\n"
        "[ t . u ]\r\n"
        "x.y = 1\r\n"
        "[[aot]]\n"
        "[[aot.sub]]\n"
        "[[aot]]\n"
        "[[aot.sub]]\n"
        "[[aot.sub]]\n"
        "m = 3\n"
    )
    assert toml_key_lines(text) == {
        ("quoted key",): 1,
        ("ml",): 2,
        ("arr",): 6,
        ("arr", 0): 7,
        ("arr", 1): 8,
        ("arr", 1, "x"): 8,
        ("arr", 1, "y"): 8,
        ("arr", 1, "y", 0): 8,
        ("t",): 10,
        ("t", "u"): 10,
        ("t", "u", "x"): 11,
        ("t", "u", "x", "y"): 11,
        ("aot",): 12,
        ("aot", 0): 12,
        ("aot", 0, "sub"): 13,
        ("aot", 0, "sub", 0): 13,
        ("aot", 1): 14,
        ("aot", 1, "sub"): 15,
        ("aot", 1, "sub", 0): 15,
        ("aot", 1, "sub", 1): 16,
        ("aot", 1, "sub", 1, "m"): 17,
    }


PASSWORD = "hunter2-Pa55"


@pytest.mark.parametrize(
    ("toml", "dotenv", "env", "expected"),
    [
        (
            f'public_url = "ftp://u:{PASSWORD}@x.org"\n',
            None,
            {},
            "mailer.toml:1: public_url: must be an absolute http(s) or mailto URL, got 'ftp://u:********@x.org'",
        ),
        (
            "",
            f"A=1\nMAILER_PUBLIC_URL=ftp://u:{PASSWORD}@x.org\n",
            {},
            ".env:2: MAILER_PUBLIC_URL: must be an absolute http(s) or mailto URL, got 'ftp://u:********@x.org'",
        ),
        (
            "",
            None,
            {"MAILER_PUBLIC_URL": f"ftp://u:{PASSWORD}@x.org"},
            "MAILER_PUBLIC_URL='ftp://u:********@x.org': public_url: "
            "must be an absolute http(s) or mailto URL, got 'ftp://u:********@x.org'",
        ),
        (
            "",
            None,
            {"MAILER_BRANDING": f'{{"website": "https://u:{PASSWORD} x@x.org"}}'},
            "MAILER_BRANDING: branding.website: a URL cannot contain spaces, got 'https://u:********@x.org'",
        ),
        (
            f'[branding.logo]\nsrc = "https://u:{PASSWORD}@x.org/logo.png"\nalt = "X"\n',
            None,
            {},
            "mailer.toml:2: branding.logo.src: must not contain a user name or password (every email links to it), "
            "got 'https://u:********@x.org/logo.png'",
        ),
    ],
)
def test_a_url_password_never_shows_in_errors(
    toml: str, dotenv: str | None, env: dict[str, str | None], expected: str
) -> None:
    """Errors may quote the value they refuse; a password in a URL shows as ********, whatever the source."""
    write_config(toml or 'public_url = "https://news.example.org"\n', dotenv=dotenv)
    lines = refused("config", env=env)
    assert lines == [expected]
    assert PASSWORD[:7] not in "\n".join(lines)


def test_a_dotenv_value_may_be_quoted_by_its_error() -> None:
    """Only secrets and URL passwords are hidden: the line and the value it holds help find a typo."""
    write_config(dotenv="A=1\nMAILER_REPLY_TO=office.icmpd.org\n")
    assert refused("config") == [
        ".env:2: MAILER_REPLY_TO: 'office.icmpd.org' is not a valid email address: An email address must have an @-sign."
    ]


@pytest.mark.parametrize("field", ["public_url", "branding.website", "branding.social[0].icon"])
def test_urls_that_go_into_emails_refuse_a_user_or_password(field: str) -> None:
    """Every subscriber would receive the credentials; the error masks the password it refuses."""
    url = f"https://newsletter:{PASSWORD}@news.example.org/"
    toml = {
        "public_url": f'public_url = "{url}"\n',
        "branding.website": f'public_url = "https://news.example.org"\n[branding]\nwebsite = "{url}"\n',
        "branding.social[0].icon": 'public_url = "https://news.example.org"\n[[branding.social]]\nlabel = "X"\n'
        f'url = "https://x.org/"\nicon = "{url}"\n',
    }[field]
    write_config(toml)
    line = toml.count("\n")
    assert refused("config") == [
        f"mailer.toml:{line}: {field}: must not contain a user name or password (every email links to it), "
        "got 'https://newsletter:********@news.example.org/'"
    ]
    write_config(toml.replace(f"newsletter:{PASSWORD}@", "newsletter@"))
    assert refused("config")[0].endswith("got 'https://newsletter@news.example.org/'")


def test_config_masks_a_url_password_in_any_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """`mailer config` and repr(settings) mask the password of every URL, not only in database_url."""
    write_config()
    monkeypatch.setenv("MAILER_DATABASE_URL", f"postgresql+psycopg://mailer:{PASSWORD}/+x=@db.example.org/news")
    monkeypatch.setenv("MAILER_UNSUBSCRIBE_MAILTO", f"https://u:{PASSWORD}@x.org/unsubscribe")
    result = run_cli("config", cwd=Path.cwd())
    assert (result.exit_code, result.stderr) == (0, ""), result.output
    lines = result.stdout.splitlines()
    env = "environment (MAILER_DATABASE_URL)"
    assert f'database_url = "postgresql+psycopg://mailer:********@db.example.org/news"  ({env})' in lines
    assert (
        'unsubscribe_mailto = "https://u:********@x.org/unsubscribe"  (environment (MAILER_UNSUBSCRIBE_MAILTO))'
        in lines
    )
    shown = result.stdout + repr(load_settings()) + str(load_settings())
    assert PASSWORD[:7] not in shown


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("postgresql+psycopg://u:pw@h:5432/db", "postgresql+psycopg://u:********@h:5432/db"),
        ("postgresql+psycopg://u:ab/cd+ef==@h/db", "postgresql+psycopg://u:********@h/db"),  # SQLAlchemy's reading
        ("https://u:p@ss@h/x", "https://u:********@h/x"),  # urllib's reading: the last @ of the host part
        ("postgresql+psycopg://u:pw@[::1/db", "postgresql+psycopg://u:********@[::1/db"),  # urllib refuses it
        ("https://u:pw@[zz]/", "https://u:********@[zz]/"),
        ("https://:pw@h/", "https://:********@h/"),
        ("sqlite:///mailer.sqlite3", "sqlite:///mailer.sqlite3"),
        ("https://u@h:8080/x", "https://u@h:8080/x"),
        (
            "got 'ftp://u:pw@x.org' and 'https://a:b@y.org/'",
            "got 'ftp://u:********@x.org' and 'https://a:********@y.org/'",
        ),
        ("mailto:news@example.org", "mailto:news@example.org"),
    ],
)
def test_mask_url_password_covers_how_urllib_and_sqlalchemy_read_a_password(text: str, masked: str) -> None:
    assert mask_url_password(text) == masked


FINITE_RANGES = {
    "smtp_timeout": "greater than 0 and at most 600",
    "rate_per_second": "from 0 to 10000",
    "retry_base_delay": "greater than 0 and at most 3600",
    "give_up_after": "greater than 0 and at most 604800",
    "confirm_hours": "greater than 0 and at most 720",
    "claim_lease_seconds": "from 5 to 3600",
}


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e20"])
@pytest.mark.parametrize("field", FINITE_RANGES)
def test_a_number_setting_must_be_finite_and_in_its_range(field: str, value: str) -> None:
    """inf made the ledger overflow and a send wait forever; every number setting says its range."""
    write_config()
    variable = f"MAILER_{field.upper()}"
    assert refused("config", env={variable: value}) == [
        f"{variable}={value}: {field}: Input should be {FINITE_RANGES[field]}"
    ]


def test_toml_inf_and_nan_are_refused_with_the_range() -> None:
    write_config('public_url = "https://news.example.org"\nclaim_lease_seconds = inf\nsmtp_timeout = nan\n')
    assert refused("config") == [
        "mailer.toml:2: claim_lease_seconds: Input should be from 5 to 3600",
        "mailer.toml:3: smtp_timeout: Input should be greater than 0 and at most 600",
    ]


@pytest.mark.parametrize(
    ("field", "value", "bounds"),
    [
        ("max_issue_bytes", "99999999999999999999", "from 1024 to 100000000"),
        ("rate_per_hour", "1" + "0" * 400, "from 0 to 36000000"),
        ("confirm_per_address_per_day", "145", "from 1 to 144"),
        ("subscribe_per_ip_per_hour", "0", "from 1 to 10000"),
    ],
)
def test_an_integer_setting_says_its_range(field: str, value: str, bounds: str) -> None:
    """A huge max_issue_bytes overflowed the file read; a limit beyond any real use is a typo."""
    write_config()
    variable = f"MAILER_{field.upper()}"
    shown = value if len(value) <= 80 else None
    prefix = f"{variable}={shown}" if shown else variable
    assert refused("config", env={variable: value}) == [f"{prefix}: {field}: Input should be {bounds}"]


def test_a_config_file_named_by_mailer_config_must_exist() -> None:
    """Ignoring it would send with the defaults, into a new ./mailer.sqlite3."""
    write_config()
    Path("folder").mkdir()
    assert refused("config", env={"MAILER_CONFIG": "nonexist.toml"}) == [
        "MAILER_CONFIG=nonexist.toml: no such config file"
    ]
    assert refused("config", env={"mailer_config": "no such.toml"}) == [
        "mailer_config='no such.toml': no such config file"
    ]
    assert refused("config", env={"MAILER_CONFIG": "folder"}) == [
        "MAILER_CONFIG=folder: is a folder, not a config file"
    ]
    assert refused("config", "--config", "nonexist.toml") == ["nonexist.toml: no such config file"]
    Path(".env").write_text("# chosen here\nMAILER_CONFIG=nonexist.toml\n")
    assert refused("config") == [".env:2: MAILER_CONFIG: nonexist.toml: no such config file"]


def test_mailer_config_in_dotenv_chooses_the_config_file() -> None:
    """Below the environment and --config, as every .env value is."""
    write_config(dotenv="MAILER_CONFIG=conf/news.toml\n")
    Path("conf").mkdir()
    Path("conf/news.toml").write_text('public_url = "https://other.example.org"\n')

    def public_url(*args: str, env: dict[str, str | None] | None = None) -> str:
        result = run_cli("config", *args, cwd=Path.cwd(), env=env)
        assert (result.exit_code, result.stderr) == (0, ""), result.output
        return result.stdout.splitlines()[0]

    assert public_url() == 'public_url = "https://other.example.org"  (conf/news.toml)'
    assert public_url(env={"MAILER_CONFIG": "mailer.toml"}) == 'public_url = "https://news.example.org"  (mailer.toml)'
    assert public_url("--config", "mailer.toml") == 'public_url = "https://news.example.org"  (mailer.toml)'


def test_a_byte_order_mark_is_accepted_in_the_config_file_and_dotenv() -> None:
    """Windows editors start UTF-8 files with one; lines are still counted from the first."""
    Path("mailer.toml").write_text(
        '\ufeffpublic_url = "https://news.example.org"\nsmtp_port = "abc"\n', encoding="utf-8"
    )
    Path(".env").write_text("\ufeffMAILER_SMTP_TIMEOUT=soon\n", encoding="utf-8")
    assert refused("config") == [
        ".env:1: MAILER_SMTP_TIMEOUT: Input should be a valid number, unable to parse string as a number",
        f"mailer.toml:2: smtp_port: {INTEGER}",
    ]
    Path("mailer.toml").write_text('\ufeffpublic_url = "https://news.example.org"\n', encoding="utf-8")
    Path(".env").write_text("\ufeffMAILER_SMTP_HOST=mail.example.org\n", encoding="utf-8")
    assert describe_settings()[0] == 'public_url = "https://news.example.org"  (mailer.toml)'
    assert 'smtp_host = "mail.example.org"  (.env)' in describe_settings()


def test_a_short_secret_does_not_garble_its_message() -> None:
    """Secrets are hidden where an error quotes them, not by replacing their letters everywhere."""
    write_config()
    assert refused("config", env={"MAILER_UNSUBSCRIBE_SECRET": "e"}) == [
        f"MAILER_UNSUBSCRIBE_SECRET: unsubscribe_secret: {TOO_SHORT}"
    ]
