"""What one message from the bounce mailbox says: who bounced, how badly, and which of our messages it was.

Read in this order, the first that answers wins:
  1. RFC 3464 delivery status notifications (`message/delivery-status`, and RFC 6533's
     `message/global-delivery-status`): one `FailedRecipient` per failed or delayed recipient;
     recipients reported as delivered, relayed or expanded are not failures, and a report of only
     those is not a bounce.
  2. RFC 5965 abuse reports (ARF, `message/feedback-report`): Feedback-Type abuse, fraud, virus,
     other and types we do not know are complaints; not-spam and auth-failure (RFC 6591: about
     our domain's SPF/DKIM, not about the reader) are not bounces.
  3. Auto-replies (RFC 3834 Auto-Submitted: auto-replied, X-Autoreply, Precedence: auto_reply,
     "Out of office" subjects) not sent by a mailer daemon: not bounces, and flufl.bounce's
     heuristics never see them.
  4. flufl.bounce's detectors for the formats MTAs invented (qmail, Exim, Yahoo, Exchange...):
     permanent failures are hard, temporary ones soft.
  5. A message that looks like a bounce (from MAILER-DAEMON or postmaster, X-Failed-Recipients,
     "Undeliverable..." subjects) with no recipient found: kind unknown, no recipients; the VERP
     token of `envelope_recipients` still says whose it is.

Kinds from enhanced status codes (RFC 3463): 5.x.x is hard, 4.x.x soft; 5.2.2 "mailbox full" is
soft, as most senders count it (it is the reader's quota, usually temporary). A 5.0.0 status with a
more specific code of the same class in the Diagnostic-Code takes that code. Without a status, an
SMTP reply code (550, 452) in the Status or Diagnostic-Code field decides, then the Action (delayed
is soft), else unknown. A 4.x.x status stays soft even with Action: failed (the MTA gave up
retrying, e.g. 4.4.7 expired): nothing says the address is bad, where flufl.bounce counts it as
permanent.

Hostile input never raises: the stdlib parser (compat32, which records bad MIME as defects rather
than raising; a multipart nested too deep for its recursion is read for its headers only) reads at
most `MAX_PARSE_BYTES`, at most `MAX_PARTS` parts `MAX_DEPTH` deep are looked at, and a message
with more is not given to flufl.bounce. The bounce's own id is its Message-ID or, without one, a
digest of all its bytes.
"""

from __future__ import annotations

import email
import email.errors
import email.header
import email.parser
import email.utils
import hashlib
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.message import Message
from typing import Literal, TypeVar

import flufl.bounce

log = logging.getLogger("mailer.delivery.bounce_parse")
T = TypeVar("T")

Kind = Literal["hard", "soft", "complaint", "unknown"]
MessageKind = Literal["hard", "soft", "complaint", "unknown", "not-a-bounce"]
Source = Literal["dsn", "arf", "flufl", "looks-like-bounce", "auto-reply", "other"]

MAX_PARSE_BYTES = 512_000
"""A bounce's reports come first; what follows is the returned message, which need not be read whole."""
MAX_PARTS = 200
MAX_DEPTH = 8
MAX_DIAGNOSTIC = 300
_MAX_HEADER = 998

_RANK: dict[Kind, int] = {"complaint": 3, "hard": 2, "soft": 1, "unknown": 0}
_NOT_COMPLAINTS = frozenset({"not-spam", "auth-failure"})
_STATUS = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})$")
_STATUS_IN_TEXT = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_REPLY_CODE = re.compile(r"(?<!\d)([245])\d\d(?!\d)")
_DAEMON_FROM = re.compile(r"mailer-daemon|postmaster|mail delivery (sub)?system|mail administrator", re.I)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery (status notification|failure|has failed)|returned mail|failure notice|"
    r"mail delivery failed|delivery problem|could not be delivered|nondeliverable",
    re.I,
)
_AUTO_REPLY_SUBJECT = re.compile(
    r"^\s*(auto(matic)?[ -]?(reply|response|antwort)|out of (the )?office|abwesenheit|absence|"
    r"r[ée]ponse automatique|vacation|away from)\b",
    re.I,
)
_MESSAGE_ID = re.compile(r"<[^<>\s]{1,500}>")
_MESSAGE_ID_LINE = re.compile(rb"^message-id:[ \t]*(<[^<>\s]{1,500}>)", re.I | re.M)


@dataclass(frozen=True)
class FailedRecipient:
    """One recipient a bounce or complaint is about.

    `address` is the one we sent to (Original-Recipient when the report gives it, else
    Final-Recipient); `final_address` is where delivery last failed, after any forwarding.
    """

    address: str
    kind: Kind
    status: str | None = None
    diagnostic: str | None = None
    final_address: str | None = None


@dataclass(frozen=True)
class BounceReport:
    """What one message of the bounce mailbox says; `kind` is the worst of its recipients'."""

    message_id: str
    kind: MessageKind
    source: Source
    recipients: tuple[FailedRecipient, ...] = ()
    original_message_id: str | None = None
    envelope_recipients: tuple[str, ...] = ()
    original_return_path: str | None = None
    feedback_type: str | None = None
    note: str = ""

    @property
    def is_bounce(self) -> bool:
        """True for bounces and complaints: anything the caller should record against a recipient."""
        return self.kind != "not-a-bounce"

    def verp_token(self, bounce_address: str) -> str | None:
        """The VERP token of the address this bounce came back to (or of the returned message's Return-Path)."""
        candidates = [*self.envelope_recipients, *([self.original_return_path] if self.original_return_path else [])]
        return next((t for a in candidates if (t := verp_token(a, bounce_address)) is not None), None)


def verp_token(address: str, bounce_address: str) -> str | None:
    """TOKEN of `bounces+TOKEN@news.example.org` for the bounce address `bounces@news.example.org`, else None.

    The domain and the `bounces` part compare case-insensitively; the token is returned as written.
    """
    _, plain = email.utils.parseaddr(address.strip())
    _, base = email.utils.parseaddr(bounce_address.strip())
    local, at, domain = plain.rpartition("@")
    base_local, base_at, base_domain = base.rpartition("@")
    if not (at and base_at and local and base_local) or domain.casefold() != base_domain.casefold():
        return None
    prefix = base_local + "+"
    if len(local) <= len(prefix) or local[: len(prefix)].casefold() != prefix.casefold():
        return None
    return local[len(prefix) :]


def parse_bounce(raw: bytes) -> BounceReport:
    """Read one raw message from the bounce mailbox; never raises, whatever the bytes."""
    head = raw[:MAX_PARSE_BYTES]
    try:
        if head.lower().count(b"multipart/") > MAX_PARTS:
            raise RecursionError
        message = email.message_from_bytes(head)
    except RecursionError:  # the stdlib parser recurses once per nested multipart
        message = email.parser.BytesParser().parsebytes(head, headersonly=True)
        message.set_payload("")
    message_id = _own_message_id(message, raw)
    parts = _parts(message)
    envelope = _envelope_recipients(message)
    found = _read_dsn(parts) or _read_arf(parts)
    if found is not None:
        kind, source, recipients, feedback_type, note = found
        original = _original_headers(parts)
        return BounceReport(
            message_id,
            kind,
            source,
            recipients,
            original_message_id=_header_message_id(original) or _reply_message_id(message),
            envelope_recipients=envelope,
            original_return_path=_return_path(original),
            feedback_type=feedback_type,
            note=note,
        )
    daemon = _from_daemon(message)
    if _is_auto_reply(message) and not daemon:
        return BounceReport(message_id, "not-a-bounce", "auto-reply", envelope_recipients=envelope, note="auto-reply")
    recipients = _flufl_recipients(message, parts)
    if (
        recipients
        or daemon
        or _content_type(message) == "multipart/report"
        or _BOUNCE_SUBJECT.search(_header(message, "subject"))
    ):
        original = _original_headers(parts)
        return BounceReport(
            message_id,
            _worst(recipients),
            "flufl" if recipients else "looks-like-bounce",
            recipients,
            original_message_id=_header_message_id(original) or _reply_message_id(message) or _quoted_message_id(raw),
            envelope_recipients=envelope,
            original_return_path=_return_path(original),
            note="" if recipients else "a bounce with no recipient found in it",
        )
    return BounceReport(message_id, "not-a-bounce", "other", envelope_recipients=envelope, note="not a bounce")


def _header(message: Message, name: str) -> str:
    """A header as one line of text: RFC 2047 words decoded, undecodable bytes replaced, at most 998 characters."""
    value = message.get(name)
    if value is None:
        return ""
    try:
        text = str(email.header.make_header(email.header.decode_header(str(value))))
    except (LookupError, UnicodeError, ValueError, email.errors.HeaderParseError):
        text = str(value)
    return " ".join(text.split())[:_MAX_HEADER]


def _headers(message: Message, name: str) -> list[str]:
    return [" ".join(str(v).split())[:_MAX_HEADER] for v in (message.get_all(name) or [])]


def _own_message_id(message: Message, raw: bytes) -> str:
    """Its Message-ID, else a digest of its body with line endings made alike: copies of one bounce that differ
    in their headers (a Received line more) or line endings (mbox against IMAP) get the same digest."""
    found = _MESSAGE_ID.search(_header(message, "message-id"))
    if found:
        return found.group(0)
    text = raw.replace(b"\r\n", b"\n")
    _, gap, body = text.partition(b"\n\n")
    return "sha256:" + hashlib.sha256(body if gap else text).hexdigest()


def _parts(message: Message) -> list[Message]:
    """The message and its parts, depth first, at most MAX_PARTS of them and MAX_DEPTH deep."""
    found: list[Message] = []
    stack: list[tuple[Message, int]] = [(message, 0)]
    while stack and len(found) < MAX_PARTS:
        part, depth = stack.pop()
        found.append(part)
        payload = part.get_payload()
        if depth < MAX_DEPTH and isinstance(payload, list):
            stack.extend((p, depth + 1) for p in reversed(payload) if isinstance(p, Message))
    return found


def _content_type(part: Message) -> str:
    return part.get_content_type().lower()


def _text(part: Message) -> str:
    """A part's payload as text, transfer encoding undone, undecodable bytes replaced."""
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload.decode("utf-8", "replace")
    return ""


def _blocks(part: Message) -> list[Message]:
    """The header blocks of a delivery-status or feedback-report part, however the parser left them."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    text = _text(part)
    parser = email.parser.HeaderParser()
    return [parser.parsestr(block.strip() + "\n") for block in re.split(r"\r?\n[ \t]*\r?\n", text) if block.strip()]


def _address(value: str) -> str | None:
    """`rfc822; ana@example.org` (or `utf-8; ...`, RFC 6533) as `ana@example.org`; None when it is no address."""
    kind, semicolon, rest = value.partition(";")
    text = rest if semicolon else kind
    text = text.strip().strip("<>").strip()
    if semicolon and kind.strip().lower() not in {"rfc822", "utf-8"}:
        return None
    if "@" not in text or any(c.isspace() for c in text) or len(text) > 320:
        return None
    return text


def _diagnostic(value: str) -> str | None:
    text = " ".join(value.split())
    kind, semicolon, rest = text.partition(";")
    if semicolon and re.fullmatch(r"[A-Za-z][\w-]*", kind.strip()):
        text = rest.strip()
    if not text:
        return None
    return text if len(text) <= MAX_DIAGNOSTIC else text[: MAX_DIAGNOSTIC - 1] + "…"


def _status(value: str, diagnostic: str | None) -> str | None:
    found = _STATUS.match(value.split("(")[0].strip())
    status = ".".join(found.groups()) if found else None
    if diagnostic and (status is None or status.endswith(".0.0")):
        detail = _STATUS_IN_TEXT.search(diagnostic)
        if detail and (status is None or detail.group(1) == status[0]):
            return ".".join(detail.groups())
    return status


def _kind(status: str | None, action: str, text: str) -> Kind:
    """By the enhanced status code, else the first SMTP reply code in the Status and Diagnostic-Code text, else the Action."""
    if status is not None:
        if status.startswith("5.2.2") or status.startswith("4"):
            return "soft"
        return "hard" if status.startswith("5") else "unknown"
    reply = _REPLY_CODE.search(text)
    if reply:
        return "hard" if reply.group(1) == "5" else "soft" if reply.group(1) == "4" else "unknown"
    return "soft" if action == "delayed" else "unknown"


_Found = tuple[MessageKind, Source, tuple[FailedRecipient, ...], str | None, str]


def _read_dsn(parts: list[Message]) -> _Found | None:
    reports = [p for p in parts if _content_type(p) in {"message/delivery-status", "message/global-delivery-status"}]
    if not reports:
        return None
    recipients: list[FailedRecipient] = []
    successes = 0
    for report in reports:
        for block in _blocks(report)[:MAX_PARTS]:
            final = _address(_header(block, "final-recipient"))
            original = _address(_header(block, "original-recipient"))
            if final is None and original is None:
                continue
            action = _header(block, "action").lower()
            if action in {"delivered", "relayed", "expanded"}:
                successes += 1
                continue
            diagnostic = _diagnostic(_header(block, "diagnostic-code"))
            status_field = _header(block, "status")
            status = _status(status_field, diagnostic)
            kind = _kind(status, action, f"{status_field} {diagnostic or ''}")
            address = original or final
            assert address is not None
            recipients.append(FailedRecipient(address, kind, status, diagnostic, final))
    if not recipients and successes:
        return "not-a-bounce", "dsn", (), None, "a delivery report: every recipient was delivered or relayed"
    if not recipients:
        return None
    return (
        _worst(recipients),
        "dsn",
        tuple(_unique(recipients, lambda r: (r.address.casefold(), r.kind, r.status))),
        None,
        "",
    )


def _read_arf(parts: list[Message]) -> _Found | None:
    report = next((p for p in parts if _content_type(p) == "message/feedback-report"), None)
    if report is None:
        return None
    fields = next(iter(_blocks(report)), Message())
    feedback_type = _header(fields, "feedback-type").lower() or "other"
    if feedback_type in _NOT_COMPLAINTS:
        return "not-a-bounce", "arf", (), feedback_type, f"a feedback report of type {feedback_type}, not a complaint"
    addresses = [a for v in _headers(fields, "original-rcpt-to") if (a := _address(v))]
    if not addresses:
        original = _original_headers(parts)
        to = email.utils.getaddresses(_headers(original, "to")) if original is not None else []
        addresses = [a for _, a in to if _address(a)][:1] if len(to) == 1 else []
    recipients = tuple(FailedRecipient(a, "complaint", diagnostic=f"Feedback-Type: {feedback_type}") for a in addresses)
    return "complaint", "arf", recipients, feedback_type, "" if recipients else "a complaint with the address redacted"


def _original_headers(parts: list[Message]) -> Message | None:
    """The headers of the message we sent, from the part that returns it (whole or headers only)."""
    for part in parts[1:]:
        content_type = _content_type(part)
        if content_type in {"message/rfc822", "message/global"}:
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        if content_type in {"text/rfc822-headers", "message/global-headers"}:
            return email.parser.HeaderParser().parsestr(_text(part)[:200_000])
    return None


def _header_message_id(headers: Message | None) -> str | None:
    if headers is None:
        return None
    found = _MESSAGE_ID.search(_header(headers, "message-id"))
    return found.group(0) if found else None


def _reply_message_id(message: Message) -> str | None:
    found = _MESSAGE_ID.search(_header(message, "in-reply-to")) or _MESSAGE_ID.search(_header(message, "references"))
    return found.group(0) if found else None


def _quoted_message_id(raw: bytes) -> str | None:
    """A Message-ID line in the body, where formats without MIME quote the returned message's headers."""
    body_start = raw.find(b"\n\n", 0, MAX_PARSE_BYTES)
    crlf_start = raw.find(b"\r\n\r\n", 0, MAX_PARSE_BYTES)
    starts = [s for s in (body_start, crlf_start) if s >= 0]
    if not starts:
        return None
    found = _MESSAGE_ID_LINE.search(raw, min(starts), MAX_PARSE_BYTES)
    return found.group(1).decode("ascii", "replace") if found else None


def _return_path(headers: Message | None) -> str | None:
    if headers is None:
        return None
    _, address = email.utils.parseaddr(_header(headers, "return-path"))
    return address or None


def _envelope_recipients(message: Message) -> tuple[str, ...]:
    """The addresses this message was delivered to, as the receiving MTAs and the sender wrote them."""
    values: list[str] = []
    for name in ("x-original-to", "delivered-to", "envelope-to", "x-envelope-to", "to", "cc"):
        values.extend(_headers(message, name))
    return tuple(_unique((a for _, a in email.utils.getaddresses(values) if "@" in a), str.casefold))


def _from_daemon(message: Message) -> bool:
    sender = " ".join(_header(message, name) for name in ("from", "sender"))
    return bool(_DAEMON_FROM.search(sender)) or message.get("x-failed-recipients") is not None


def _is_auto_reply(message: Message) -> bool:
    if any(message.get(name) is not None for name in ("x-autoreply", "x-autorespond")):
        return True
    if _header(message, "auto-submitted").lower().startswith("auto-replied"):
        return True
    if _header(message, "precedence").lower() == "auto_reply":
        return True
    return bool(_AUTO_REPLY_SUBJECT.search(_header(message, "subject")))


def _flufl_recipients(message: Message, parts: list[Message]) -> tuple[FailedRecipient, ...]:
    """flufl.bounce's findings; its heuristics are regexes over other people's formats, so a failure is logged, not raised."""
    if len(parts) >= MAX_PARTS:
        return ()
    if not email.utils.getaddresses([str(message.get("from", ""))]):
        del message["from"]
        message["From"] = "<>"  # flufl.bounce 6.0's Yale detector fails on a message without From, ending the scan
    try:
        temporary, permanent = flufl.bounce.all_failures(message)
    except Exception as error:  # a detector's bug on hostile input must not stop the mailbox being read
        log.warning(
            "flufl.bounce could not read a message (%s: %s); treating it as unrecognised", type(error).__name__, error
        )
        return ()
    found = [FailedRecipient(a, "hard") for a in _decoded(permanent)]
    found += [FailedRecipient(a, "soft") for a in _decoded(temporary) if a not in {r.address for r in found}]
    return tuple(found)


def _decoded(addresses: Iterable[bytes]) -> list[str]:
    text = (a.decode("ascii", "replace").strip().strip("<>") for a in addresses)
    return sorted({a for a in text if _address(a)})


def _unique(items: Iterable[T], key: Callable[[T], object]) -> list[T]:
    seen: set[object] = set()
    kept: list[T] = []
    for item in items:
        if (k := key(item)) not in seen:
            seen.add(k)
            kept.append(item)
    return kept


def _worst(recipients: Iterable[FailedRecipient]) -> Kind:
    return max((r.kind for r in recipients), key=_RANK.__getitem__, default="unknown")
