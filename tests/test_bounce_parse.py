"""Reading bounces: flufl.bounce's corpus of real MTAs' bounces, DSNs and ARF reports as MTAs write them, hostile bytes."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from mailer.delivery.bounce_parse import MAX_DIAGNOSTIC, BounceReport, parse_bounce, verp_token

CORPUS = Path(__file__).parent / "data" / "bounces"
BOUNCES = "bounces@news.example.org"
OUR_ID = "<a1b2c3.42@news.example.org>"

# flufl.bounce 6.0.0's tests/test_detectors.py DETECTORS table: the addresses of each file, False
# for permanent (hard) and True for temporary (soft), merged where it lists a file twice.
EXPECTED: dict[str, tuple[set[str], bool]] = {
    "postfix_01.txt": ({"xxxxx@local.ie"}, False),
    "postfix_02.txt": ({"yyyyy@digicool.com"}, False),
    "postfix_03.txt": ({"ttttt@ggggg.com"}, False),
    "postfix_04.txt": ({"userx@mail1.example.com"}, False),
    "postfix_05.txt": ({"userx@example.net"}, False),
    "exim_01.txt": ({"userx@its.example.nl"}, False),
    "sendmail_01.txt": ({"zzzzz@shaft.coal.nl", "zzzzz@nfg.nl"}, False),
    "simple_01.txt": ({"bbbsss@example.com"}, False),
    "simple_02.txt": ({"userx@example.net"}, False),
    "simple_04.txt": ({"userx@example.com"}, False),
    "newmailru_01.txt": ({"zzzzz@newmail.ru"}, False),
    "hotpop_01.txt": ({"userx@example.com"}, False),
    "microsoft_03.txt": ({"userx@example.com"}, False),
    "simple_05.txt": ({"userx@example.net"}, False),
    "simple_06.txt": ({"userx@example.com"}, False),
    "simple_07.txt": ({"userx@example.net"}, False),
    "simple_08.txt": ({"userx@example.de"}, False),
    "simple_09.txt": ({"userx@example.de"}, False),
    "simple_10.txt": ({"userx@example.com"}, False),
    "simple_11.txt": ({"userx@example.com"}, False),
    "simple_12.txt": ({"userx@example.ac.jp"}, False),
    "simple_13.txt": ({"userx@example.fr"}, False),
    "simple_14.txt": ({"userx@example.com", "usery@example.com"}, False),
    "simple_15.txt": ({"userx@example.be"}, False),
    "simple_16.txt": ({"userx@example.com"}, False),
    "simple_17.txt": ({"userx@example.com"}, False),
    "simple_18.txt": ({"userx@example.com"}, False),
    "simple_19.txt": ({"userx@example.com.ar"}, False),
    "simple_20.txt": ({"userx@example.com"}, False),
    "simple_23.txt": ({"userx@example.it"}, False),
    "simple_24.txt": ({"userx@example.com"}, False),
    "simple_25.txt": ({"userx@example.com"}, False),
    "simple_26.txt": ({"userx@example.it"}, False),
    "simple_27.txt": ({"userx@example.net.py"}, False),
    "simple_29.txt": ({"userx@example.com"}, False),
    "simple_30.txt": ({"userx@example.com"}, False),
    "simple_31.txt": ({"userx@example.fr"}, False),
    "simple_32.txt": ({"userx@example.com"}, False),
    "simple_33.txt": ({"userx@example.com"}, False),
    "simple_34.txt": ({"roland@example.com"}, False),
    "simple_36.txt": ({"userx@example.com"}, False),
    "simple_37.txt": ({"user@example.edu"}, False),
    "simple_38.txt": ({"userx@example.com"}, False),
    "simple_39.txt": ({"userx@example.ru"}, False),
    "simple_41.txt": ({"userx@example.com"}, False),
    "simple_44.txt": ({"user@example.com"}, False),
    "simple_45.txt": ({"subscriber@earthlink.net"}, False),
    "bounce_02.txt": ({"userx@example.com"}, False),
    "bounce_03.txt": ({"userx@example.uk"}, False),
    "yahoo_12.txt": ({"user@yahoo.com"}, False),
    "simple_03.txt": ({"userx@example.za"}, True),
    "simple_21.txt": ({"userx@example.com"}, True),
    "simple_22.txt": ({"User@example.org"}, True),
    "simple_28.txt": ({"userx@example.com"}, True),
    "simple_35.txt": ({"calvin@example.com"}, True),
    "simple_40.txt": ({"user@example.com"}, True),
    "groupwise_01.txt": ({"userx@example.EDU"}, False),
    "groupwise_02.txt": ({"userx@example.com"}, False),
    "yale_01.txt": ({"userx@cs.yale.edu", "userx@yale.edu"}, False),
    "dsn_01.txt": ({"userx@example.com"}, False),
    "dsn_02.txt": ({"zzzzz@example.uk"}, False),
    "dsn_03.txt": ({"userx@example.be"}, False),
    "dsn_04.txt": ({"userx@example.ch"}, False),
    "dsn_05.txt": ({"userx@example.cz"}, True),
    "dsn_06.txt": ({"userx@example.com"}, True),
    "dsn_07.txt": ({"userx@example.nz"}, True),
    "dsn_08.txt": ({"userx@example.de"}, True),
    "dsn_09.txt": ({"userx@example.com"}, False),
    "dsn_10.txt": ({"anne.person@dom.ain"}, False),
    "dsn_11.txt": ({"joem@example.com"}, False),
    "dsn_12.txt": ({"userx@example.jp"}, False),
    "dsn_13.txt": ({"userx@example.com"}, False),
    "dsn_14.txt": ({"userx@example.com.dk"}, False),
    "dsn_15.txt": ({"userx@example.com"}, False),
    "dsn_16.txt": ({"userx@example.com"}, False),
    "dsn_17.txt": ({"userx@example.fi"}, True),
    "dsn_18.txt": ({"email@replaced.net"}, False),
    "microsoft_01.txt": ({"userx@example.COM"}, False),
    "microsoft_02.txt": ({"userx@example.COM"}, False),
    "microsoft_04.txt": ({"userx@example.COM"}, False),
    "smtp32_01.txt": ({"userx@example.ph"}, False),
    "smtp32_02.txt": ({"userx@example.com"}, False),
    "smtp32_03.txt": ({"userx@example.com"}, False),
    "smtp32_04.txt": ({"after_another@example.net", "one_bad_address@example.net"}, False),
    "smtp32_05.txt": ({"userx@example.com"}, False),
    "smtp32_06.txt": ({"Absolute_garbage_addr@example.net"}, False),
    "smtp32_07.txt": ({"userx@example.com"}, False),
    "qmail_01.txt": ({"userx@example.de"}, False),
    "qmail_02.txt": ({"userx@example.com"}, False),
    "qmail_03.txt": ({"userx@example.jp"}, False),
    "qmail_04.txt": ({"userx@example.au"}, False),
    "qmail_05.txt": ({"userx@example.com"}, False),
    "qmail_06.txt": ({"ntl@xxx.com"}, False),
    "qmail_07.txt": ({"user@example.net"}, False),
    "llnl_01.txt": ({"user1@example.gov"}, False),
    "netscape_01.txt": ({"aaaaa@corel.com", "bbbbb@corel.com"}, False),
    "yahoo_01.txt": ({"userx@example.com"}, False),
    "yahoo_02.txt": ({"userx@example.es"}, False),
    "yahoo_03.txt": ({"userx@example.com"}, False),
    "yahoo_04.txt": ({"userx@example.es", "usery@example.uk"}, False),
    "yahoo_05.txt": ({"userx@example.com", "usery@example.com"}, False),
    "yahoo_06.txt": ({"userx@example.com", "usery@example.com", "userz@example.com", "usera@example.com"}, False),
    "yahoo_07.txt": ({"userw@example.com", "userx@example.com", "usery@example.com", "userz@example.com"}, False),
    "yahoo_08.txt": (
        {
            "usera@example.com",
            "userb@example.com",
            "userc@example.com",
            "userd@example.com",
            "usere@example.com",
            "userf@example.com",
        },
        False,
    ),
    "yahoo_09.txt": ({"userx@example.com", "usery@example.com"}, False),
    "yahoo_10.txt": ({"userx@example.com", "usery@example.com", "userz@example.com"}, False),
    "yahoo_11.txt": ({"bad_user@aol.com"}, False),
    "yahoo_13.txt": ({"bogus-address@example.net"}, False),
    "sina_01.txt": ({"userx@sina.com", "usery@sina.com"}, False),
    "aol_01.txt": ({"screenname@aol.com"}, False),
    "caiwireless_01.txt": ({"userx@example.com"}, False),
}
SOFT_HERE = {"dsn_02.txt"}
"""Status 4.4.7 (the MTA gave up retrying): flufl.bounce says permanent, we say soft, as 4.x.x promises."""
NO_RECIPIENT: dict[str, str] = {
    "dumbass_01.txt": "unknown",  # flufl.bounce finds no address either; From and Subject say it is a bounce
    "simple_42.txt": "hard",  # flufl's SimpleMatch finds nothing; the DSN part names david...@gmail.com
    "simple_43.txt": "unknown",  # an Exim bounce with its recipient redacted
    "qmail_08.txt": "not-a-bounce",  # Precedence: auto_reply, "Auto reply"
    "groupwise_03.txt": "not-a-bounce",  # flufl: "Not a bounce but has confused groupwise"
    "bounce_01.txt": "not-a-bounce",  # a forwarded list message, in no flufl.bounce test
}


def test_the_table_covers_every_file_of_the_corpus() -> None:
    assert {p.name for p in CORPUS.glob("*_[0-9][0-9].txt")} == set(EXPECTED) | set(NO_RECIPIENT)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_file_gives_the_addresses_flufl_bounce_expects(name: str) -> None:
    addresses, temporary = EXPECTED[name]
    report = parse_bounce((CORPUS / name).read_bytes())
    expected_kind = "soft" if temporary or name in SOFT_HERE else "hard"
    assert {r.address for r in report.recipients} == addresses
    assert {r.kind for r in report.recipients} == {expected_kind}
    assert report.kind == expected_kind
    assert report.is_bounce


@pytest.mark.parametrize("name", sorted(NO_RECIPIENT))
def test_corpus_file_without_a_usable_recipient(name: str) -> None:
    report = parse_bounce((CORPUS / name).read_bytes())
    assert report.kind == NO_RECIPIENT[name]
    if name == "simple_42.txt":
        assert [(r.address, r.status) for r in report.recipients] == [("david...@gmail.com", "5.7.1")]
    else:
        assert report.recipients == ()


def test_a_dsn_from_the_corpus_gives_its_diagnostic_on_one_line() -> None:
    report = parse_bounce((CORPUS / "dsn_10.txt").read_bytes())
    assert report.source == "dsn"
    assert report.original_message_id == "<200210211625.12753.b.a.dude@example.com>"
    [failed] = report.recipients
    assert (failed.status, failed.kind) == ("5.0.0", "hard")
    assert failed.diagnostic == (
        "host mx.dom.ain[192.168.1.100] said: 550 {mx001-rz3} <anne.person@dom.ain>... User unknown or not "
        "available - Empfaenger unbekannt oder nicht erreichbar (in reply to RCPT TO command)"
    )


def dsn(
    *blocks: str,
    token: str = "T0KEN-1",
    returned: str = "text/rfc822-headers",
    message_id: str | None = "<dsn.1@mx.example.net>",
) -> bytes:
    """A multipart/report DSN as Postfix writes one, to our VERP address, returning our message's headers."""
    original = f"From: ICMPD Newsletter <newsletter@news.example.org>\nTo: ana@example.org\nMessage-ID: {OUR_ID}\nSubject: March\n"
    if returned == "message/rfc822":
        original += "\nThe body of the issue.\n"
    per_recipient = "\n".join(blocks)
    text = f"""\
Return-Path: <>
Delivered-To: bounces+{token}@news.example.org
X-Original-To: bounces+{token}@news.example.org
{"Message-ID: " + message_id if message_id else ""}
From: MAILER-DAEMON@mx.example.net (Mail Delivery System)
To: bounces+{token}@news.example.org
Subject: Undelivered Mail Returned to Sender
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B1"

--B1
Content-Type: text/plain

This is the mail system at host mx.example.net. I'm sorry to have to inform you that your message
could not be delivered to one or more recipients.

--B1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net
Arrival-Date: Thu, 10 Mar 2016 09:00:00 +0100

{per_recipient}
--B1
Content-Type: {returned}

{original}
--B1--
"""
    return text.replace("\n\n\n", "\n\n").replace("\n", "\r\n").encode()


def recipient(
    status: str, diagnostic: str, *, action: str = "failed", final: str = "ana@example.org", original: str | None = None
) -> str:
    lines = [f"Final-Recipient: rfc822; {final}"]
    if original:
        lines.insert(0, f"Original-Recipient: rfc822;{original}")
    lines += [f"Action: {action}", f"Status: {status}", f"Diagnostic-Code: smtp; {diagnostic}", ""]
    return "\n".join(lines)


def test_user_unknown_is_hard_for_the_address_we_sent_to() -> None:
    raw = dsn(
        recipient(
            "5.1.1",
            "550 5.1.1 <ana.forwarded@mail.example.org>: Recipient address\n    rejected: User unknown in virtual mailbox table",
            final="ana.forwarded@mail.example.org",
            original="ana@example.org",
        )
    )
    report = parse_bounce(raw)
    assert report.kind == "hard" and report.source == "dsn" and report.is_bounce
    [failed] = report.recipients
    assert failed.address == "ana@example.org"
    assert failed.final_address == "ana.forwarded@mail.example.org"
    assert failed.status == "5.1.1"
    assert failed.diagnostic == (
        "550 5.1.1 <ana.forwarded@mail.example.org>: Recipient address rejected: User unknown in virtual mailbox table"
    )
    assert report.original_message_id == OUR_ID
    assert report.message_id == "<dsn.1@mx.example.net>"
    assert report.verp_token(BOUNCES) == "T0KEN-1"
    assert "bounces+T0KEN-1@news.example.org" in report.envelope_recipients


def test_a_domain_that_does_not_exist_is_hard() -> None:
    report = parse_bounce(
        dsn(recipient("5.1.2", "Host or domain name not found. Name service error for name=exampel.org"))
    )
    assert [(r.kind, r.status) for r in report.recipients] == [("hard", "5.1.2")]
    assert report.recipients[0].diagnostic == "Host or domain name not found. Name service error for name=exampel.org"


@pytest.mark.parametrize(
    ("status", "action", "diagnostic"),
    [
        ("4.2.2", "delayed", "452 4.2.2 Mailbox full"),
        ("5.2.2", "failed", "552 5.2.2 The email account that you tried to reach is over quota"),
        (
            "4.7.1",
            "delayed",
            "450 4.7.1 <ana@example.org>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/",
        ),
    ],
    ids=["mailbox-full-4.2.2", "mailbox-full-5.2.2", "greylisted-4.7.1"],
)
def test_full_mailboxes_and_greylisting_are_soft(status: str, action: str, diagnostic: str) -> None:
    report = parse_bounce(dsn(recipient(status, diagnostic, action=action)))
    assert report.kind == "soft"
    assert [(r.address, r.kind, r.status) for r in report.recipients] == [("ana@example.org", "soft", status)]


def test_a_generic_status_takes_the_detail_of_the_diagnostic_code() -> None:
    report = parse_bounce(dsn(recipient("5.0.0", "550 5.1.1 user unknown")))
    assert report.recipients[0].status == "5.1.1"


def test_only_the_failed_recipient_of_a_report_counts() -> None:
    raw = dsn(
        recipient("2.0.0", "250 2.0.0 Ok: queued", action="delivered", final="ben@example.org"),
        recipient("5.1.1", "550 5.1.1 no such user", final="ana@example.org"),
    )
    assert [r.address for r in parse_bounce(raw).recipients] == ["ana@example.org"]


def test_a_report_of_only_deliveries_is_not_a_bounce() -> None:
    report = parse_bounce(dsn(recipient("2.0.0", "250 2.0.0 Ok", action="relayed")))
    assert report.kind == "not-a-bounce" and not report.is_bounce and report.recipients == ()


def test_a_long_diagnostic_is_one_bounded_line() -> None:
    report = parse_bounce(dsn(recipient("5.7.1", "550 5.7.1 " + "blocked because of policy reasons\n  " * 40)))
    diagnostic = report.recipients[0].diagnostic
    assert diagnostic is not None and len(diagnostic) == MAX_DIAGNOSTIC and diagnostic.endswith("…")
    assert "\n" not in diagnostic and "  " not in diagnostic


def test_the_whole_returned_message_gives_its_message_id_too() -> None:
    report = parse_bounce(dsn(recipient("5.1.1", "550 no such user"), returned="message/rfc822"))
    assert report.original_message_id == OUR_ID


def test_a_bounce_without_a_message_id_is_known_by_a_digest_of_its_bytes() -> None:
    raw = dsn(recipient("5.1.1", "550 no such user"), message_id=None)
    first, again = parse_bounce(raw), parse_bounce(raw)
    assert first.message_id.startswith("sha256:") and first.message_id == again.message_id
    assert parse_bounce(raw + b"\r\n").message_id != first.message_id


ARF = """\
From: Mail Provider Abuse <scomp@aol.net>
To: fbl@news.example.org
Subject: Email Feedback Report for IP 192.0.2.1
Message-ID: <arf.7@feedback.aol.net>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="part1"

--part1
Content-Type: text/plain

This is an email abuse report for an email message received from IP 192.0.2.1.

--part1
Content-Type: message/feedback-report

Feedback-Type: {feedback_type}
User-Agent: SomeGenerator/1.0
Version: 1
Original-Mail-From: <bounces+T0KEN-2@news.example.org>
{rcpt_to}Arrival-Date: Thu, 10 Mar 2016 09:00:00 +0100
Source-IP: 192.0.2.1

--part1
Content-Type: message/rfc822
Content-Disposition: inline

Return-Path: <bounces+T0KEN-2@news.example.org>
From: ICMPD Newsletter <newsletter@news.example.org>
To: {to}
Subject: March
Message-ID: {our_id}

The body of the issue.
--part1--
"""


def arf(feedback_type: str = "abuse", *, rcpt_to: str | None = "ana@example.org", to: str = "ana@example.org") -> bytes:
    text = ARF.format(
        feedback_type=feedback_type, rcpt_to=f"Original-Rcpt-To: <{rcpt_to}>\n" if rcpt_to else "", to=to, our_id=OUR_ID
    )
    return text.replace("\n", "\r\n").encode()


def test_an_abuse_report_is_a_complaint_about_the_reader() -> None:
    report = parse_bounce(arf())
    assert report.kind == "complaint" and report.source == "arf" and report.feedback_type == "abuse"
    assert [(r.address, r.kind) for r in report.recipients] == [("ana@example.org", "complaint")]
    assert report.original_message_id == OUR_ID
    assert report.message_id == "<arf.7@feedback.aol.net>"
    assert report.verp_token(BOUNCES) == "T0KEN-2"  # from the returned message's Return-Path


def test_a_redacted_complaint_still_names_our_message() -> None:
    report = parse_bounce(arf(rcpt_to=None, to="redacted@aol.com, someone@aol.com"))
    assert report.kind == "complaint" and report.recipients == ()
    assert report.original_message_id == OUR_ID and report.verp_token(BOUNCES) == "T0KEN-2"


def test_without_original_rcpt_to_the_returned_message_says_who_complained() -> None:
    report = parse_bounce(arf(rcpt_to=None, to="Ana <ana@example.org>"))
    assert [r.address for r in report.recipients] == ["ana@example.org"]


@pytest.mark.parametrize(
    ("feedback_type", "kind"),
    [("fraud", "complaint"), ("other", "complaint"), ("not-spam", "not-a-bounce"), ("auth-failure", "not-a-bounce")],
)
def test_other_feedback_types(feedback_type: str, kind: str) -> None:
    report = parse_bounce(arf(feedback_type))
    assert report.kind == kind and report.feedback_type == feedback_type


AUTO_REPLY = b"""\
Return-Path: <>
From: Ana Example <ana@example.org>
To: bounces+T0KEN-3@news.example.org
Subject: Automatic reply: March 2016 Monthly Update
Auto-Submitted: auto-replied
X-Auto-Response-Suppress: All
In-Reply-To: <a1b2c3.42@news.example.org>
Message-ID: <ooo.1@example.org>

I am out of the office until 21 March. For urgent matters please write to
<ben@example.org>: he will help you.
"""


def test_an_auto_reply_is_not_a_bounce() -> None:
    report = parse_bounce(AUTO_REPLY.replace(b"\n", b"\r\n"))
    assert report.kind == "not-a-bounce" and report.source == "auto-reply" and report.recipients == ()
    assert not report.is_bounce


def test_a_normal_mail_is_not_a_bounce() -> None:
    raw = b"From: Ben <ben@example.org>\r\nTo: bounces@news.example.org\r\nSubject: Lunch?\r\nMessage-ID: <x@y>\r\n\r\nShall we meet at noon?\r\n"
    report = parse_bounce(raw)
    assert report.kind == "not-a-bounce" and report.source == "other" and report.message_id == "<x@y>"


def test_in_reply_to_finds_our_message_when_nothing_is_returned() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example.net\r\nTo: bounces+T0KEN-4@news.example.org\r\nSubject: failure notice\r\n"
        b"In-Reply-To: <a1b2c3.42@news.example.org>\r\n\r\nSorry, we could not deliver your message.\r\n"
    )
    report = parse_bounce(raw)
    assert report.kind == "unknown" and report.source == "looks-like-bounce" and report.recipients == ()
    assert report.original_message_id == OUR_ID and report.verp_token(BOUNCES) == "T0KEN-4"


MALFORMED = [
    pytest.param(
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="\r\n\r\n--\r\n--\r\n',
        id="empty-boundary",
    ),
    pytest.param(
        b"Content-Type: multipart/report; boundary=X\r\n\r\n--X\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Final-Recipient: rfc822; ana@example.org\r\nAction: failed\r\nStatus: 9.9.9.9\r\n",
        id="unterminated-with-a-bad-status",
    ),
    pytest.param(
        b"\xff\xfe\x00: \x00\r\nSubject: =?x-unknown?q?abc?= =?utf-8?b?////?=\r\nFrom:\r\n\r\n\xc3\x28",
        id="bad-bytes-and-charsets",
    ),
    pytest.param(
        b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n"
        + b"".join(f"--b{i}\r\nContent-Type: multipart/mixed; boundary=b{i + 1}\r\n\r\n".encode() for i in range(3000)),
        id="3000-nested-multiparts",
    ),
    pytest.param(b"", id="empty"),
]


@pytest.mark.parametrize("raw", MALFORMED)
def test_malformed_mime_gives_a_result(raw: bytes) -> None:
    report = parse_bounce(raw)
    assert isinstance(report, BounceReport) and report.message_id


def test_the_bad_status_above_leaves_the_kind_to_the_action() -> None:
    report = parse_bounce(MALFORMED[1].values[0])  # type: ignore[arg-type]
    assert [(r.address, r.status, r.kind) for r in report.recipients] == [("ana@example.org", None, "unknown")]


def test_a_10_mb_bounce_is_read_from_its_beginning_in_bounded_time() -> None:
    raw = dsn(recipient("5.1.1", "550 5.1.1 no such user"), returned="message/rfc822")
    huge = raw.replace(b"The body of the issue.", b"The body of the issue. " * 450_000)
    assert len(huge) > 10_000_000
    started = time.monotonic()
    report = parse_bounce(huge)
    assert time.monotonic() - started < 10
    assert [r.address for r in report.recipients] == ["ana@example.org"] and report.kind == "hard"
    assert report.original_message_id == OUR_ID


def test_10_mb_of_one_line_text_is_not_a_bounce() -> None:
    started = time.monotonic()
    report = parse_bounce(b"Subject: x\r\n\r\n" + b"<ana@example.org>: " * 600_000)
    assert time.monotonic() - started < 10
    assert report.message_id.startswith("sha256:")


@pytest.mark.parametrize("seed", range(5))
def test_random_bytes_are_not_a_bounce(seed: int) -> None:
    raw = random.Random(seed).randbytes(50_000)
    report = parse_bounce(raw)
    assert report.kind == "not-a-bounce" and report.recipients == ()


@pytest.mark.parametrize(
    ("address", "token"),
    [
        ("bounces+T0KEN-1@news.example.org", "T0KEN-1"),
        ("<bounces+T0KEN-1@NEWS.Example.ORG>", "T0KEN-1"),
        ("Bounces+aBc.dEf@news.example.org", "aBc.dEf"),
        ('"Bounce" <bounces+x+y@news.example.org>', "x+y"),
        ("bounces@news.example.org", None),
        ("bounces+@news.example.org", None),
        ("bounces+T0KEN@other.example.org", None),
        ("bounces+T0KEN@sub.news.example.org", None),
        ("notbounces+T0KEN@news.example.org", None),
        ("ana@example.org", None),
        ("", None),
        ("no at sign", None),
    ],
)
def test_verp_token(address: str, token: str | None) -> None:
    assert verp_token(address, BOUNCES) == token


def test_verp_token_with_a_bounce_address_of_another_case() -> None:
    assert verp_token("bounces+T@news.example.org", "Bounces@News.Example.Org") == "T"
