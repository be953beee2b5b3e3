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
}
PUBLIC_URL = "https://newsletter.icmpd.org/archive/international-centre-for-migration-policy-development"
MAILTO = "mailto:unsubscribe@newsletter.icmpd.org?subject=unsubscribe"


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


@pytest.fixture
def sent(workdir: Path, database_url: str, smtp_server: SMTPServer, dkim_key: tuple[Path, bytes]) -> dict[str, bytes]:
    """The issue with SUBJECT, sent with `mailer send` to one subscriber per name in NAMES; the bytes by recipient."""
    issue = workdir / "issues" / "2016-02.yaml"
    issue.write_text(
        issue.read_text(encoding="utf-8").replace(
            "\nlanguage: en\n", f"\nlanguage: en\nsubject: {json.dumps(SUBJECT, ensure_ascii=False)}\n"
        )
    )
    engine = open_database(database_url)
    create_list(engine, "staff", "All staff")
    engine.dispose()
    env = {
        "MAILER_DATABASE_URL": database_url,
        "MAILER_PUBLIC_URL": PUBLIC_URL,
        "MAILER_SMTP_HOST": "127.0.0.1",
        "MAILER_SMTP_PORT": str(smtp_server.port),
        "MAILER_SMTP_TLS": "none",
        "MAILER_SENDER": "ICMPD Newsletter <newsletter@icmpd.org>",
        "MAILER_UNSUBSCRIBE_SECRET": SECRET,
        "MAILER_UNSUBSCRIBE_MAILTO": MAILTO,
        "MAILER_DKIM_KEY_FILE": str(dkim_key[0]),
        "MAILER_DKIM_SELECTOR": "news2016",
    }
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
    import dkim

    message_ids = set()
    for address, data in sent.items():
        message = BytesParser(EmailMessage, policy=email.policy.default).parsebytes(data)
        assert re.fullmatch(r"\w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}", message["Date"])
        assert re.fullmatch(r"<[^<>@\s]+@icmpd\.org>", message["Message-ID"])
        message_ids.add(message["Message-ID"])
        assert message["Subject"] == SUBJECT
        assert message["To"].addresses[0].addr_spec == address
        assert display_name(message) == NAMES[address]
        assert message["List-Unsubscribe"].startswith(f"<{PUBLIC_URL}/unsubscribe/")
        assert message["List-Unsubscribe"].endswith(f">, <{MAILTO}>")
        assert message["List-Id"] == "staff <staff.newsletter.icmpd.org>"
        assert dkim.verify(data, dnsfunc=lambda name, timeout=5: dkim_key[1] if name.startswith(b"news2016.") else None)
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
