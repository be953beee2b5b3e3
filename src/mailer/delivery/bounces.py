"""The delivery loop: what comes back about a delivery becomes an event, and the policy suppresses who must not be mailed.

A bounce is matched to the delivery it is about by its VERP token (bounce_address set: every message's envelope
sender names its delivery, and only a genuine token is acted on), otherwise by the Message-ID we gave the
message together with the address it reports (Original-Recipient, else Final-Recipient); a report naming an
address but no Message-ID of ours is matched to the last message sent to that address.

Policy (settings): a hard bounce suppresses the address at once (`bounced`, with the diagnostic); a complaint
suppresses it everywhere (`complaint`); `soft_bounce_limit` soft bounces on different issues, with no delivery
between them that came back clean, suppress it (`bounced`). Unknown bounces are kept and not acted on. A refusal
at RCPT time during the send with an address-level status (5.1.1 no such user, 5.1.2 no such domain, 5.1.3,
5.1.6 moved, 5.1.10 null MX) counts as a hard bounce the same way.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from mailer.audience.addresses import email_key
from mailer.audience.database import bounce_messages, deliveries, delivery_events, now, subscribers, suppressions
from mailer.delivery.bounce_mailbox import open_mailbox
from mailer.delivery.bounce_parse import BounceReport, FailedRecipient, Kind, parse_bounce
from mailer.delivery.verp import read_verp_token
from mailer.errors import ConfigError
from mailer.settings import Settings

ADDRESS_REFUSED = re.compile(r"^5\d\d[ -]5\.1\.(?:1|2|3|6|10)\b")
"""A 5xx reply about the address itself (RFC 3463 X.1.Y: bad mailbox, bad domain, moved, null MX)."""
MAX_SOURCE = 300
MAX_DIAGNOSTIC = 1000


@dataclass(frozen=True)
class _Delivery:
    subscriber_id: int
    email: str
    issue: str
    list_id: int


@dataclass
class FetchSummary:
    """What one read of the bounce mailbox found, by outcome: a kind (hard, soft, complaint, unknown), `seen`
    (read before), `not-a-bounce` (left unread), `forged` (a VERP token we did not make) or `unmatched` (about no
    delivery of ours). `suppressed` holds (address, reason) in the order they were suppressed."""

    outcomes: Counter[str] = field(default_factory=Counter)
    suppressed: list[tuple[str, str]] = field(default_factory=list)

    def line(self) -> str:
        from mailer.wording import plural

        read = sum(self.outcomes.values())
        parts = [f"{count} {outcome}" for outcome, count in sorted(self.outcomes.items())]
        suppressed = f"; {plural(len(self.suppressed), 'address', 'addresses')} suppressed" if self.suppressed else ""
        return f"{plural(read, 'message')} read" + (f": {', '.join(parts)}" if parts else "") + suppressed


def _suppress(conn: Connection, address: str, reason: str, note: str) -> bool:
    """Suppress an address everywhere; a complaint outranks an earlier reason. True if it was not suppressed."""
    key = email_key(address)
    current = conn.execute(sa.select(suppressions.c.reason).where(suppressions.c.email_key == key)).scalar()
    if current is None:
        conn.execute(sa.insert(suppressions).values(email_key=key, reason=reason, note=note[:1000], created_at=now()))
        return True
    if reason == "complaint" and current != "complaint":
        conn.execute(
            sa.update(suppressions).where(suppressions.c.email_key == key).values(reason=reason, note=note[:1000])
        )
    return False


def _soft_run(conn: Connection, subscriber_id: int) -> int:
    """Issues in a row, newest first, whose delivery to this subscriber soft-bounced, up to one that came back clean."""
    bounced = {
        row.issue: row.kind
        for row in conn.execute(
            sa.select(delivery_events.c.issue, delivery_events.c.kind).where(
                delivery_events.c.subscriber_id == subscriber_id, delivery_events.c.kind.in_(("soft", "hard"))
            )
        )
    }
    run = 0
    seen: set[str] = set()
    for (issue,) in conn.execute(
        sa.select(deliveries.c.issue)
        .where(deliveries.c.subscriber_id == subscriber_id, deliveries.c.sent_at.is_not(None))
        .order_by(deliveries.c.sent_at.desc())
    ):
        if issue in seen:
            continue
        seen.add(issue)
        if bounced.get(issue) is None:
            break
        run += 1
    return run


def _record(
    conn: Connection, delivery: _Delivery, kind: str, status: str, diagnostic: str, source: str, *, soft_limit: int
) -> bool:
    """One event, then the policy; True if it suppressed the address."""
    conn.execute(
        sa.insert(delivery_events).values(
            subscriber_id=delivery.subscriber_id,
            email=delivery.email,
            issue=delivery.issue,
            list_id=delivery.list_id,
            kind=kind,
            status=status,
            diagnostic=diagnostic[:MAX_DIAGNOSTIC],
            source=source[:MAX_SOURCE],
            created_at=now(),
        )
    )
    note = " ".join(part for part in (status, diagnostic) if part)
    if kind == "hard":
        return _suppress(conn, delivery.email, "bounced", f"{delivery.issue}: {note}")
    if kind == "complaint":
        return _suppress(conn, delivery.email, "complaint", f"{delivery.issue}: spam complaint")
    if kind == "soft" and (run := _soft_run(conn, delivery.subscriber_id)) >= soft_limit:
        return _suppress(conn, delivery.email, "bounced", f"{run} soft bounces in a row, last {delivery.issue}: {note}")
    return False


_DELIVERY_COLUMNS = (deliveries.c.subscriber_id, deliveries.c.email, deliveries.c.issue, deliveries.c.list_id)


def _delivery_by_id(conn: Connection, delivery_id: int) -> _Delivery | None:
    row = conn.execute(sa.select(*_DELIVERY_COLUMNS).where(deliveries.c.id == delivery_id)).first()
    return _Delivery(*row) if row else None


def _delivery_by_message(conn: Connection, message_id: str | None, address: str) -> _Delivery | None:
    """Our message to this address: by its Message-ID when the bounce quotes it, else the last one sent there."""
    sid = conn.execute(sa.select(subscribers.c.id).where(subscribers.c.email_key == email_key(address))).scalar()
    if sid is None:
        return None
    query = sa.select(*_DELIVERY_COLUMNS).where(deliveries.c.subscriber_id == sid, deliveries.c.sent_at.is_not(None))
    if message_id:
        query = query.where(deliveries.c.message_id == message_id)
    row = conn.execute(query.order_by(deliveries.c.sent_at.desc()).limit(1)).first()
    return _Delivery(*row) if row else None


def _matches(conn: Connection, settings: Settings, report: BounceReport) -> list[tuple[_Delivery, FailedRecipient]] | str:
    """Each delivery the report is about with what it says of it; or why it is about none of ours."""
    token = report.verp_token(settings.bounce_address) if settings.bounce_address else None
    if token is not None:
        secret = settings.unsubscribe_secret.get_secret_value() if settings.unsubscribe_secret else ""
        delivery_id = read_verp_token(secret, token)
        delivery = _delivery_by_id(conn, delivery_id) if delivery_id is not None else None
        if delivery is None:
            return "forged"
        mine = [r for r in report.recipients if email_key(r.address) == email_key(delivery.email)]
        kind: Kind = "unknown" if report.kind == "not-a-bounce" else report.kind
        return [(delivery, (mine or [*report.recipients, FailedRecipient(delivery.email, kind)])[0])]
    if settings.bounce_address and not report.original_message_id:
        return "unmatched"  # with VERP on, an address alone is no evidence: anyone can name one
    found = [
        (delivery, recipient)
        for recipient in report.recipients
        if (delivery := _delivery_by_message(conn, report.original_message_id, recipient.address)) is not None
    ]
    return found or "unmatched"


def process_bounce(engine: Engine, settings: Settings, raw: bytes, summary: FetchSummary) -> str:
    """Read one message of the bounce mailbox into events, once; returns its outcome (see FetchSummary)."""
    report = parse_bounce(raw)
    message_id = report.message_id[:MAX_SOURCE]
    with engine.begin() as conn:
        before = conn.execute(
            sa.select(bounce_messages.c.outcome).where(bounce_messages.c.message_id == message_id)
        ).scalar()
        if before is not None:
            outcome = "not-a-bounce" if before == "not-a-bounce" else "seen"
        elif not report.is_bounce:
            outcome = "not-a-bounce"
        else:
            matched = _matches(conn, settings, report)
            if isinstance(matched, str):
                outcome = matched
            else:
                outcome = "unmatched"
                for delivery, said in matched:
                    kind = said.kind if report.kind != "complaint" else "complaint"
                    status, diagnostic = said.status or "", said.diagnostic or ""
                    limit = settings.soft_bounce_limit
                    if _record(conn, delivery, kind, status, diagnostic, message_id, soft_limit=limit):
                        summary.suppressed.append((delivery.email, "complaint" if kind == "complaint" else "bounced"))
                    outcome = kind
        if before is None:
            conn.execute(sa.insert(bounce_messages).values(message_id=message_id, outcome=outcome, processed_at=now()))
    summary.outcomes[outcome] += 1
    return outcome


def record_refusals(conn: Connection, refused: Iterable[tuple[int, str]]) -> list[str]:
    """Hard bounces from the send itself: (delivery id, reply) of permanent RCPT refusals about the address."""
    suppressed = []
    for delivery_id, reply in refused:
        found = ADDRESS_REFUSED.match(reply)
        delivery = _delivery_by_id(conn, delivery_id) if found else None
        if found and delivery is not None:
            status = reply[4 : found.end()]
            diagnostic = reply[found.end() :].strip()
            if _record(conn, delivery, "hard", status, diagnostic, "smtp", soft_limit=0):
                suppressed.append(delivery.email)
    return suppressed


def record_unsubscribe(engine: Engine, subscriber_id: int, list_id: int, issue: str | None, how: str) -> None:
    """An unsubscribe through an issue's signed link, counted against that issue."""
    with engine.begin() as conn:
        email = conn.execute(sa.select(subscribers.c.email).where(subscribers.c.id == subscriber_id)).scalar()
        if email is None:
            return
        conn.execute(
            sa.insert(delivery_events).values(
                subscriber_id=subscriber_id,
                email=email,
                issue=issue,
                list_id=list_id,
                kind="unsubscribe",
                diagnostic=how,
                source="web",
                created_at=now(),
            )
        )


def fetch_bounces(
    engine: Engine,
    settings: Settings,
    *,
    watch: bool = False,
    stop: threading.Event | None = None,
    progress: Callable[[FetchSummary], None] | None = None,
    summary: FetchSummary | None = None,
) -> FetchSummary:
    """Read the bounce mailbox (`bounce_mailbox`): each message is recorded in one transaction, then marked handled.

    A crash or Ctrl-C between the two leaves the message unmarked; the next fetch finds it recorded (by its
    Message-ID) and only marks it, so nothing is lost or counted twice. `watch` keeps reading as messages arrive.
    """
    if not settings.bounce_mailbox:
        raise ConfigError(
            "bounce_mailbox is not set; set it in mailer.toml or MAILER_BOUNCE_MAILBOX, e.g. imaps://bounces@mail.example.org/INBOX"
        )
    summary = summary if summary is not None else FetchSummary()
    with open_mailbox(
        settings.bounce_mailbox,
        password=settings.bounce_password,
        ca_file=settings.bounce_ca_file,
        verify=settings.bounce_tls_verify,
        handled_folder=settings.bounce_handled_folder,
        timeout=settings.smtp_timeout,
    ) as mailbox:
        poll = settings.bounce_poll_seconds
        messages = mailbox.watch(poll_seconds=poll, idle_seconds=poll, stop=stop) if watch else mailbox.messages()
        for message in messages:
            if process_bounce(engine, settings, message.raw, summary) != "not-a-bounce":
                mailbox.mark_handled(message.id)  # a person's reply stays unread for the people who read the mailbox
            if progress is not None:
                progress(summary)
            if stop is not None and stop.is_set():
                break
    return summary
