"""The headers of a sent issue, as a relay receives them: Date and Message-ID, lines folded at 76, values intact.

`mailer send` runs as a user runs it, to the aiosmtpd server of the `smtp_server` fixture, with
DKIM on; the received bytes are read line by line and parsed back. The confirmation mail of the
web subscribe form is checked the same way in test_public_web.py.
"""

from __future__ import annotations

import email.policy
import json
import re
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parseaddr
from pathlib import Path

import pytest

from mailer.audience.database import open_database
from mailer.audience.lists import create_list
from tests.cli_helpers import run_cli
from tests.conftest import SECRET
from tests.smtp_server import SMTPServer

SUBJECT = (
    "Février 2016 : la migration, la mobilité et le dialogue entre l’Europe, l’Asie centrale "
    "et l’Afrique de l’Ouest — Monthly Update of the International Centre"
)
NAMES = {
    "maria@example.org": "Maria da Conceição de Sá Álvares Gonçalves Guimarães Magalhães Albuquerque e Vasconcelos",
    "sasha@example.org": "Александра Сергеевна Пушкина-Гончарова, Международный центр по развитию миграционной политики",
    "wang@example.org": "王小明 (ICMPD 北京办公室 国际移民政策发展中心 驻华代表处) 😀👩\u200d👩\u200d👧",
    "alvares@example.org": "Alvares Goncalves, Maria da Conceicao de Sa, Guimaraes Magalhaes Albuquerque e Vasconcelos",
    "admin@example.org": "=?utf-8?q?Admin?= Team",
    "ana@example.org": "Ana",
    "long@example.org": "x" * 299,
    "eve@example.org": "Eve Bcc: victim@example.org" + "Z" * 250,
}
"""The last two hold a word longer than a line: alone, and inside what would be a quoted string."""
PUBLIC_URL = "https://newsletter.icmpd.org/archive/international-centre-for-migration-policy-development"
MAILTO = "mailto:unsubscribe@newsletter.icmpd.org?subject=unsubscribe"
SENDER = "ICMPD Newsletter <newsletter@icmpd.org>"


def long_lines(data: bytes, width: int = 76) -> list[bytes]:
    return [line for line in data.split(b"\r\n") if len(line) > width]


def display_name(message: EmailMessage) -> str:
    """The To display name as RFC 2047 6.2 decodes it, whitespace between adjacent encoded words ignored.

    Python 3.11's address parser keeps that whitespace (CPython gh-128110, fixed later), so the
    phrase is decoded with email.header, as mail clients decode it.
    """
    [raw] = [value for name, value in message.raw_items() if name == "To"]
    phrase = parseaddr(re.sub(r"\r\n(?=[ \t])", "", raw))[0]
    return str(make_header(decode_header(phrase)))


def with_subject(workdir: Path, subject: str) -> None:
    issue = workdir / "issues" / "2016-02.yaml"
    issue.write_text(
        issue.read_text(encoding="utf-8").replace(
            "\nlanguage: en\n", f"\nlanguage: en\nsubject: {json.dumps(subject, ensure_ascii=False)}\n"
        )
    )


def send_env(
    database_url: str, smtp_server: SMTPServer, dkim_key: tuple[Path, bytes], *, sender: str = SENDER
) -> dict[str, str]:
    """Settings as a user sets them, with DKIM on; creates the list "staff"."""
    engine = open_database(database_url)
    create_list(engine, "staff", "All staff")
    engine.dispose()
    return {
        "MAILER_DATABASE_URL": database_url,
        "MAILER_PUBLIC_URL": PUBLIC_URL,
        "MAILER_SMTP_HOST": "127.0.0.1",
        "MAILER_SMTP_PORT": str(smtp_server.port),
        "MAILER_SMTP_TLS": "none",
        "MAILER_SENDER": sender,
        "MAILER_UNSUBSCRIBE_SECRET": SECRET,
        "MAILER_UNSUBSCRIBE_MAILTO": MAILTO,
        "MAILER_DKIM_KEY_FILE": str(dkim_key[0]),
        "MAILER_DKIM_SELECTOR": "news2016",
    }


def dkim_verifies(data: bytes, dkim_key: tuple[Path, bytes]) -> bool:
    import dkim

    return bool(
        dkim.verify(data, dnsfunc=lambda name, timeout=5: dkim_key[1] if name.startswith(b"news2016.") else None)
    )


@pytest.fixture
def sent(workdir: Path, database_url: str, smtp_server: SMTPServer, dkim_key: tuple[Path, bytes]) -> dict[str, bytes]:
    """The issue with SUBJECT, sent with `mailer send` to one subscriber per name in NAMES; the bytes by recipient."""
    with_subject(workdir, SUBJECT)
    env = send_env(database_url, smtp_server, dkim_key)
    for address, name in NAMES.items():
        added = run_cli("subscribers", "add", "staff", address, "--name", name, cwd=workdir, env=env)
        assert added.exit_code == 0, added.output
    result = run_cli("send", "issues/2016-02.yaml", "--list", "staff", cwd=workdir, env=env)
    assert result.exit_code == 0, result.output
    return {item.recipients[0]: item.data for item in smtp_server.recorder.messages}


def test_every_line_of_a_sent_issue_fits_76_but_an_unsplittable_url(sent: dict[str, bytes]) -> None:
    assert sorted(sent) == sorted(NAMES)
    for address, data in sent.items():
        head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        [unsubscribe] = [line for line in head if line.startswith(b"List-Unsubscribe:")]
        url = re.fullmatch(rb"List-Unsubscribe: <(https://\S+/unsubscribe/[\w.-]+)>,", unsubscribe)
        assert url is not None, f"the https link stays whole on the field's first line: {unsubscribe!r}"
        assert head[head.index(unsubscribe) + 1] == f" <{MAILTO}>".encode(), "the mailto goes on a line of its own"
        assert long_lines(data) == [unsubscribe], f"{address}: only the line of the {len(url.group(1))}-character URL"


def test_a_sent_issue_has_date_and_message_id_and_gives_back_subject_and_name(
    sent: dict[str, bytes], dkim_key: tuple[Path, bytes]
) -> None:
    message_ids = set()
    for address, data in sent.items():
        message = BytesParser(EmailMessage, policy=email.policy.default).parsebytes(data)
        assert re.fullmatch(r"\w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}", message["Date"])
        assert re.fullmatch(r"<[^<>@\s]+@icmpd\.org>", message["Message-ID"])
        message_ids.add(message["Message-ID"])
        assert message["Subject"] == SUBJECT
        assert [a.addr_spec for a in message["To"].addresses] == [address]
        assert not message["To"].defects
        assert display_name(message) == NAMES[address]
        assert message["List-Unsubscribe"].startswith(f"<{PUBLIC_URL}/unsubscribe/")
        assert message["List-Unsubscribe"].endswith(f">, <{MAILTO}>")
        assert message["List-Id"] == "staff <staff.newsletter.icmpd.org>"
        assert dkim_verifies(data, dkim_key)
    assert len(message_ids) == len(NAMES)


def test_names_without_adjacent_encoded_words_read_back_exactly_with_pythons_parser(sent: dict[str, bytes]) -> None:
    """Quoted and folded inside the quotes; a name that looks like an encoded word; a plain one."""
    for address in ("alvares@example.org", "admin@example.org", "ana@example.org"):
        message = BytesParser(EmailMessage, policy=email.policy.default).parsebytes(sent[address])
        assert message["To"].addresses[0].display_name == NAMES[address]
    assert (
        b'\r\nTo: "Alvares Goncalves, Maria da Conceicao de Sa, Guimaraes Magalhaes\r\n'
        b' Albuquerque e Vasconcelos" <alvares@example.org>\r\n'
    ) in sent["alvares@example.org"]


LONG_WORD_SUBJECT = "Update " + "Donaudampfschifffahrtsgesellschaftskapitaenswitwe" * 5 + " 2016"
LONG_DOMAIN = "mail.international-centre-for-migration-policy.org"
"""50 characters: its Message-IDs make an 88-character line, its From address still fits one."""


def test_every_path_folds_a_long_subject_word_and_keeps_a_long_domains_message_id_whole(
    workdir: Path, database_url: str, smtp_server: SMTPServer, dkim_key: tuple[Path, bytes]
) -> None:
    """A send, a dry run's .eml and a test send: the same header rules, and only the two unsplittable lines pass 76.

    A Message-ID is one `<...>` with no whitespace in it (RFC 5322 3.6.4): nothing to fold at.
    """
    with_subject(workdir, LONG_WORD_SUBJECT)
    env = send_env(database_url, smtp_server, dkim_key, sender=f"ICMPD Newsletter <newsletter@{LONG_DOMAIN}>")
    added = run_cli("subscribers", "add", "staff", "ana@example.org", "--name", "Ana", cwd=workdir, env=env)
    assert added.exit_code == 0, added.output
    dry = run_cli("send", "issues/2016-02.yaml", "--list", "staff", "--dry-run", "-o", "eml", cwd=workdir, env=env)
    assert dry.exit_code == 0, dry.output
    test_send = run_cli("send", "issues/2016-02.yaml", "--to", "proof@example.org", cwd=workdir, env=env)
    assert test_send.exit_code == 0, test_send.output
    real = run_cli("send", "issues/2016-02.yaml", "--list", "staff", cwd=workdir, env=env)
    assert real.exit_code == 0, real.output
    [eml] = (workdir / "eml").glob("*.eml")
    received = {item.recipients[0]: item.data for item in smtp_server.recorder.messages}
    paths = {
        "dry run": eml.read_bytes(),
        "test send": received["proof@example.org"],
        "send": received["ana@example.org"],
    }
    for path, data in paths.items():
        head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        message = BytesParser(EmailMessage, policy=email.policy.default).parsebytes(data)
        message_id = f"Message-ID: {message['Message-ID']}".encode()
        assert re.fullmatch(rf"<[^<>@\s]+@{re.escape(LONG_DOMAIN)}>", message["Message-ID"]), path
        assert len(message_id) > 76 and message_id in head, f"{path}: the Message-ID stays whole on its line"
        [unsubscribe] = [line for line in head if line.startswith(b"List-Unsubscribe:")]
        assert long_lines(data) == [message_id, unsubscribe] or long_lines(data) == [unsubscribe, message_id], path
        [content_type] = [line for line in head if line.startswith(b"Content-Type:")]
        assert content_type == b"Content-Type: multipart/alternative;", path
        assert re.fullmatch(rb' boundary="=_mailer_[0-9a-f]{32}"', head[head.index(content_type) + 1]), path
        assert message["Subject"] == LONG_WORD_SUBJECT, path
        assert dkim_verifies(data, dkim_key), path
