"""The delivery loop: what comes back about a delivery becomes an event, and the policy suppresses who must not be mailed.

A bounce is matched to the delivery it is about by its VERP token (bounce_address set: every message's envelope
sender names its delivery, and only a genuine token is acted on), otherwise by the Message-ID we gave the
message together with the address it reports (Original-Recipient, else Final-Recipient). A report naming an
address but no Message-ID of ours is about nobody we can tell: anyone can write an address.

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
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from mailer.audience.addresses import email_key
from mailer.audience.database import bounce_messages, deliveries, delivery_events, now, subscribers, suppressions
from mailer.delivery.bounce_mailbox import open_mailbox
from mailer.delivery.bounce_parse import BounceReport, FailedRecipient, Kind, parse_bounce
from mailer.delivery.verp import genuine, token_delivery
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
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        from mailer.wording import plural

        read = sum(self.outcomes.values())
        parts = [f"{count} {outcome}" for outcome, count in sorted(self.outcomes.items())]
        suppressed = f"; {plural(len(self.suppressed), 'address', 'addresses')} suppressed" if self.suppressed else ""
        return f"{plural(read, 'message')} read" + (f": {', '.join(parts)}" if parts else "") + suppressed


def _insert_new(conn: Connection, table: sa.Table, **values: Any) -> bool:
    """INSERT unless the key is taken (by a fetch running at the same time, say); True if this one inserted it."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    key = next(iter(table.primary_key.columns))
    statement = insert(table).values(**values).on_conflict_do_nothing().returning(key)
    return conn.execute(statement).first() is not None  # rowcount is 1 either way through psycopg


def _storable(text: str) -> str:
    """Text as PostgreSQL can store it: no NUL, which a hostile bounce may carry anywhere."""
    return text.replace("\x00", "")


def _suppress(conn: Connection, address: str, reason: str, note: str) -> bool:
    """Suppress an address everywhere; a complaint outranks an earlier reason. True if it was not suppressed."""
    key = email_key(address)
    current = conn.execute(sa.select(suppressions.c.reason).where(suppressions.c.email_key == key)).scalar()
    if current is None:
        return _insert_new(conn, suppressions, email_key=key, reason=reason, note=note[:1000], created_at=now())
    if reason == "complaint" and current != "complaint":
        conn.execute(
            sa.update(suppressions).where(suppressions.c.email_key == key).values(reason=reason, note=note[:1000])
        )
    return False


def _soft_run(conn: Connection, subscriber_id: int) -> int:
    """Issues in a row, newest first, whose delivery to this subscriber soft-bounced, up to one that came back clean
    or to the last time a suppression was lifted by hand (a fresh start)."""
    lifted = conn.execute(
        sa.select(sa.func.max(delivery_events.c.created_at)).where(
            delivery_events.c.subscriber_id == subscriber_id, delivery_events.c.kind == "resubscribe"
        )
    ).scalar()
    since = [delivery_events.c.created_at > lifted] if lifted is not None else []
    bounced = {
        row.issue: row.kind
        for row in conn.execute(
            sa.select(delivery_events.c.issue, delivery_events.c.kind).where(
                delivery_events.c.subscriber_id == subscriber_id,
                delivery_events.c.kind.in_(("soft", "hard")),
                *since,
            )
        )
    }
    run = 0
    seen: set[str] = set()
    sent_since = [deliveries.c.sent_at > lifted] if lifted is not None else []
    for (issue,) in conn.execute(
        sa.select(deliveries.c.issue)
        .where(deliveries.c.subscriber_id == subscriber_id, deliveries.c.sent_at.is_not(None), *sent_since)
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
            status=_storable(status)[:16],
            diagnostic=_storable(diagnostic)[:MAX_DIAGNOSTIC],
            source=_storable(source)[:MAX_SOURCE],
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


def _delivery_by_message(conn: Connection, message_id: str, address: str) -> _Delivery | None:
    """Our message with this Message-ID to this address (Message-IDs carry a keyed hash: nobody can guess one)."""
    sid = conn.execute(sa.select(subscribers.c.id).where(subscribers.c.email_key == email_key(address))).scalar()
    if sid is None:
        return None
    query = sa.select(*_DELIVERY_COLUMNS).where(
        deliveries.c.subscriber_id == sid, deliveries.c.sent_at.is_not(None), deliveries.c.message_id == message_id
    )
    row = conn.execute(query.order_by(deliveries.c.sent_at.desc()).limit(1)).first()
    return _Delivery(*row) if row else None


def _matches(
    conn: Connection, settings: Settings, report: BounceReport
) -> list[tuple[_Delivery, FailedRecipient]] | str:
    """Each delivery the report is about with what it says of it; or why it is about none of ours."""
    token = report.verp_token(settings.bounce_address) if settings.bounce_address else None
    if token is not None:
        secret = settings.unsubscribe_secret.get_secret_value() if settings.unsubscribe_secret else ""
        delivery_id = token_delivery(token)
        if delivery_id is None:
            return "forged"
        delivery = _delivery_by_id(conn, delivery_id)
        if delivery is None:
            return "unmatched"  # a delivery since deleted (with its list), or an id never given
        if not genuine(secret, token, delivery.email):
            return "forged"
        mine = [r for r in report.recipients if email_key(r.address) == email_key(delivery.email)]
        kind: Kind = "unknown" if report.kind == "not-a-bounce" else report.kind
        return [(delivery, (mine or [*report.recipients, FailedRecipient(delivery.email, kind)])[0])]
    if not report.original_message_id:
        return "unmatched"  # an address alone is no evidence: anyone can write one
    found = [
        (delivery, recipient)
        for recipient in report.recipients
        if (delivery := _delivery_by_message(conn, report.original_message_id, recipient.address)) is not None
    ]
    return found or "unmatched"


def process_bounce(engine: Engine, settings: Settings, raw: bytes, summary: FetchSummary) -> str:
    """Read one message of the bounce mailbox into events, once; returns its outcome (see FetchSummary)."""
    report = parse_bounce(raw)
    message_id = _storable(report.message_id)[:MAX_SOURCE]
    with engine.begin() as conn:
        # claimed first: a fetch running at the same time waits here, then finds it taken
        claimed = _insert_new(conn, bounce_messages, message_id=message_id, outcome="reading", processed_at=now())
        before = (
            None
            if claimed
            else conn.execute(
                sa.select(bounce_messages.c.outcome).where(bounce_messages.c.message_id == message_id)
            ).scalar()
        )
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
                    status, diagnostic = _storable(said.status or ""), _storable(said.diagnostic or "")
                    limit = settings.soft_bounce_limit
                    if _record(conn, delivery, kind, status, diagnostic, message_id, soft_limit=limit):
                        summary.suppressed.append((delivery.email, "complaint" if kind == "complaint" else "bounced"))
                    outcome = kind
        if claimed:
            conn.execute(
                sa.update(bounce_messages).where(bounce_messages.c.message_id == message_id).values(outcome=outcome)
            )
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
            try:
                outcome = process_bounce(engine, settings, message.raw, summary)
            except sa.exc.DBAPIError as error:  # one message the database refuses: say so, leave it, read on
                reason = str(error.orig or error).strip().splitlines()[0]
                summary.problems.append(f"bounce mailbox {mailbox.name}: message {message.id} left unread: {reason}")
                summary.outcomes["left unread"] += 1
                if progress is not None:
                    progress(summary)
                continue
            if outcome != "not-a-bounce":
                mailbox.mark_handled(message.id)  # a person's reply stays unread for the people who read the mailbox
            if progress is not None:
                progress(summary)
            if stop is not None and stop.is_set():
                break
    return summary
