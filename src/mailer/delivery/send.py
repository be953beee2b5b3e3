"""Sending an issue to a list: render first, then a fixed pool of workers drains the ledger.

Everything that does not depend on the recipient (validation, rendering, the MIME template)
happens before the first connection, so a template or data error mails nobody. Workers pull
recipients from a bounded queue fed in small claimed batches, so memory stays flat whatever
the list size; outcomes are written to the ledger in batches every fraction of a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.engine import Engine

from mailer.audience.lists import list_id, mailable_subscribers
from mailer.compose.issues_folder import bad_name, is_slug, slug_of
from mailer.compose.link_check import BrokenLinks, check_links
from mailer.compose.load import PlacedIssue, load_placed_issue
from mailer.compose.render import RenderedIssue, render_issue
from mailer.delivery.dkim_signing import DkimSigner
from mailer.delivery.ledger import (
    FAILED,
    PENDING,
    SENDING,
    UNCERTAIN,
    Batch,
    Claimed,
    Ledger,
    Outcome,
    copies_elsewhere,
)
from mailer.delivery.message import MessageTemplate, Recipient, sender_domain
from mailer.delivery.pacing import Notice, RateLimiter, RelayContact
from mailer.delivery.send_guard import SendGuard
from mailer.delivery.smtp import DeliveryError, FileTransport, SMTPConnection, SMTPSetupError, Transport
from mailer.delivery.unsubscribe import make_token, unsubscribe_url
from mailer.delivery.verp import VerpAddresses
from mailer.errors import ConfigError, DeliveryFailed, MailerError
from mailer.settings import Settings

FLUSH_SECONDS = 0.05
T = TypeVar("T")
Progress = Callable[[int, int, int], None]
"""Called with (messages sent, messages failed or held as uncertain, messages this run set out to send)."""


@dataclass
class SendSummary:
    issue: str
    list_name: str
    sent: int = 0
    failed_temporary: int = 0
    failed_permanent: int = 0
    skipped: int = 0
    """Rows skipped in this run because their recipient unsubscribed, was suppressed or left the list."""
    duplicates: int = 0
    """Rows skipped in this run because their recipient has (or is getting) the issue through another list."""
    uncertain: int = 0
    held: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    left: dict[str, int] = field(default_factory=dict)
    """What the ledger holds for this issue and list after the run, other than sent or skipped rows."""

    @property
    def complete(self) -> bool:
        """Everything in the ledger for this issue and list is delivered or deliberately skipped: exit code 0."""
        return not self.interrupted and not any(self.left.values())

    def line(self) -> str:
        rate = self.sent / self.seconds if self.seconds else 0.0
        text = (
            f"{self.issue} to '{self.list_name}': {self.sent} sent, "
            f"{self.failed_temporary + self.failed_permanent} failed "
            f"({self.failed_permanent} permanent), {self.skipped} skipped (unsubscribed or suppressed)"
        )
        if self.duplicates:
            text += f", {self.duplicates} skipped (they get it through another list)"
        text += f" in {self.seconds:.1f} s ({rate:.0f}/s)"
        if self.held:
            text += f"; {self.held} uncertain (no reply after the end of data; not resent)"
        if self.uncertain:
            text += f"; {self.uncertain} resent after an interrupted send (see mailer status)"
        if self.interrupted:
            text += "; interrupted: run the same command again to send the rest"
        return text

    def advice(self, issue_file: Path | str) -> list[str]:
        """One line per kind of row left undone, saying what to run; empty when the ledger is complete."""
        command = f"mailer send {issue_file} --list {self.list_name}"
        lines = []
        if self.left.get(FAILED):
            again = f"{command} --retry-failed" + (" --include-permanent" if self.left.get("permanent") else "")
            lines.append(f"{self.left[FAILED]} failed (see mailer status); to try them again: {again}")
        if self.left.get(UNCERTAIN):
            lines.append(
                f"{self.left[UNCERTAIN]} messages may have been delivered (no reply after the end of data) and were "
                f"not sent again; to send them again on purpose: {command} --retry-uncertain"
            )
        if self.left.get(PENDING) and not self.interrupted:
            lines.append(f"{self.left[PENDING]} not sent yet; run the same command again to send them")
        return lines


def _sender(settings: Settings) -> str:
    if not settings.sender:
        raise ConfigError(
            "sender is not set; set it in mailer.toml or MAILER_SENDER, e.g. 'Newsletter <news@example.org>'"
        )
    return settings.sender


def build_template(issue_path: Path, settings: Settings, *, list_name: str | None) -> tuple[str, MessageTemplate]:
    """Validate and render the issue and build its message template: all before any connection."""
    slug, [template] = build_templates(issue_path, settings, [list_name])
    return slug, template


def build_templates(
    issue_path: Path, settings: Settings, list_names: Sequence[str | None], *, guard: SendGuard | None = None
) -> tuple[str, list[MessageTemplate]]:
    """The issue validated and rendered once, and its message template for each list (List-Id differs)."""
    built = build_issue(issue_path, settings, list_names, guard=guard)
    return built.slug, built.templates


@dataclass(frozen=True)
class BuiltIssue:
    """One version of an issue file, rendered, with what the link check needs to say where a link is written."""

    slug: str
    templates: list[MessageTemplate]
    placed: PlacedIssue
    rendered: RenderedIssue


def build_issue(
    issue_path: Path, settings: Settings, list_names: Sequence[str | None], *, guard: SendGuard | None = None
) -> BuiltIssue:
    """build_templates, keeping the rendered issue and the places of its values.

    `guard` (a list send) checks the very version of the file that is rendered: no draft, no later
    date unless forced, only a file the archive publishes.
    """
    slug = slug_of(issue_path)
    if not is_slug(slug):
        raise MailerError(bad_name(issue_path))
    placed = load_placed_issue(issue_path, max_bytes=settings.max_issue_bytes)
    issue = placed.issue
    if guard is not None:
        guard.check(issue_path, issue)
    rendered = render_issue(issue, slug, settings)
    domain = settings.archive_url.split("//", 1)[-1].split("/", 1)[0]
    sender = _sender(settings)
    signer = _dkim_signer(settings, sender_domain(sender))
    templates = [
        MessageTemplate(
            rendered,
            subject=issue.email_subject,
            sender=sender,
            reply_to=settings.reply_to,
            list_id=f"{list_name} <{list_name}.{domain}>" if list_name else None,
            unsubscribe_mailto=settings.unsubscribe_mailto,
            signer=signer,
            embed_images=settings.images == "embed",
        )
        for list_name in list_names
    ]
    return BuiltIssue(slug, templates, placed, rendered)


def _dkim_signer(settings: Settings, domain: str) -> DkimSigner | None:
    if settings.dkim_key_file is None or settings.dkim_selector is None or not domain:
        return None
    return DkimSigner(settings.dkim_key_file, settings.dkim_selector, domain)


def personal_recipient(
    settings: Settings, secret: str, list_id_value: int, subscriber_id: int, email: str, name: str, issue: str
) -> Recipient:
    """The per-recipient values of one message, with its signed unsubscribe link (naming the issue it came in)."""
    token = make_token(secret, subscriber_id, list_id_value, issue)
    return Recipient(email, name, unsubscribe_url(settings.archive_url, token))


def _secret(settings: Settings) -> str:
    if settings.unsubscribe_secret is None:
        raise ConfigError(
            "unsubscribe_secret is not set; set MAILER_UNSUBSCRIBE_SECRET to 32+ random characters "
            "(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return settings.unsubscribe_secret.get_secret_value()


@dataclass
class _Tally:
    """What this run has done so far: the summary, the outcomes not yet written, the rows to give back."""

    summary: SendSummary
    total: int
    progress: Progress | None
    outcomes: list[Outcome] = field(default_factory=list)
    released: list[int] = field(default_factory=list)

    def count(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        summary = self.summary
        if outcome.sent:
            summary.sent += 1
        elif outcome.uncertain:
            summary.held += 1
        elif outcome.permanent:
            summary.failed_permanent += 1
        else:
            summary.failed_temporary += 1
        if self.progress:
            self.progress(summary.sent, summary.failed_temporary + summary.failed_permanent + summary.held, self.total)

    def take_outcomes(self) -> list[Outcome]:
        batch, self.outcomes = self.outcomes, []
        return batch


@dataclass
class _ListSend:
    """One run of a send to a list: the message, the ledger, the relay's pacing and the tally."""

    settings: Settings
    template: MessageTemplate
    ledger: Ledger
    secret: str
    relay: RelayContact
    tally: _Tally
    stop: asyncio.Event
    notice: Notice | None = None
    fatal: BaseException | None = None
    verp: VerpAddresses | None = None
    """Each message's own envelope sender (bounce_address set), naming its delivery; else the From address."""

    def fail(self, error: BaseException) -> None:
        """Stop the whole send: the first fatal error is the one reported."""
        if self.fatal is None:
            self.fatal = error
        self.stop.set()

    async def ledger_call(self, operation: Callable[..., T], *args: Any) -> T:
        """A ledger operation on the database thread; a lost database stops the send (LedgerError)."""
        try:
            return await asyncio.to_thread(operation, *args)
        except MailerError as error:
            self.fail(error)
            raise

    def recipient(self, claimed: Claimed) -> Recipient:
        return personal_recipient(
            self.settings,
            self.secret,
            self.ledger.list_id,
            claimed.subscriber_id,
            claimed.email,
            claimed.name,
            self.ledger.issue,
        )

    async def deliver(self, transport: Transport, claimed: Claimed) -> Outcome | None:
        """Send one message with retries; None when the send stopped before it could be tried.

        A message that cannot be made for this recipient (data stored before today's checks, say)
        fails this row permanently; the others go on.
        """
        try:
            message_id, data = self.template.message_for(self.recipient(claimed))
        except (MailerError, ValueError) as error:
            reply = f"cannot make this recipient's message: {error}"
            return Outcome(claimed.delivery_id, False, reply, claimed.attempts, permanent=True)
        relay = self.relay
        envelope = self.verp.address(claimed.delivery_id, claimed.email) if self.verp else self.template.sender_address
        attempts = claimed.attempts
        tries = 0
        while True:
            while (wait := relay.pause_until - time.monotonic()) > 0 and not self.stop.is_set():
                await _sleep_unless(self.stop, wait)  # again if another worker's failure moved the pause
            if self.stop.is_set():
                return None
            await relay.limiter.acquire()
            attempts += 1
            tries += 1
            contact_before = relay.last_contact
            try:
                reply = await transport.send(envelope, claimed.email, data)
            except DeliveryError as error:
                if error.uncertain:  # the whole message was written, no reply came: never resent
                    return Outcome(claimed.delivery_id, False, error.reply, attempts, uncertain=True)
                relay_gone = error.connection_lost and error.code in (None, 421)  # 421: the service, not the message
                if error.code is not None and not relay_gone:
                    relay.reached()
                if error.connection_lost:
                    relay.lost(error, tries)
                    if relay_gone and relay.last_contact == contact_before:
                        tries -= (
                            1  # nobody got through since this message's last try: the relay's outage, not the message's
                        )
                        continue
                if error.permanent or tries >= self.settings.max_attempts:
                    return Outcome(claimed.delivery_id, False, error.reply, attempts, permanent=error.permanent)
                if not error.connection_lost:
                    await _sleep_unless(self.stop, relay.backoff(tries))
                continue
            relay.reached()
            return Outcome(claimed.delivery_id, True, reply, attempts, message_id=message_id)


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def _worker(run: _ListSend, queue: asyncio.Queue[Claimed | None], transport: Transport) -> None:
    try:
        while (claimed := await queue.get()) is not None:
            try:
                if run.stop.is_set():
                    run.tally.released.append(claimed.delivery_id)
                    continue
                try:
                    outcome = await run.deliver(transport, claimed)
                except SMTPSetupError as error:
                    run.fail(error)
                    run.tally.released.append(claimed.delivery_id)
                    continue
                if outcome is None:
                    run.tally.released.append(claimed.delivery_id)
                else:
                    run.tally.count(outcome)
            finally:
                queue.task_done()
    finally:
        await transport.close()


async def _feed(run: _ListSend, queue: asyncio.Queue[Claimed | None], workers: int) -> None:
    """Claim one pool's worth at a time, one batch ahead of the workers.

    At most three pools' worth of rows (in flight, queued, and the batch being queued) are
    claimed but not yet recorded at any moment: that, plus what was accepted in the last
    FLUSH_SECONDS, bounds the "uncertain" rows after a crash. When nothing is left to claim
    but other senders (PostgreSQL) still hold rows, it waits: for their outcomes, or for their
    lease to lapse, and then sends those rows itself.
    """
    waiting = 0
    try:
        while not run.stop.is_set():
            batch: Batch = await run.ledger_call(run.ledger.claim, workers)
            run.tally.summary.skipped += batch.skipped
            if not batch.rows:
                elsewhere = await run.ledger_call(run.ledger.claimed_elsewhere)
                if not elsewhere:
                    break
                if elsewhere != waiting and run.notice:
                    run.notice(f"waiting for {elsewhere} messages another sender has claimed")
                waiting = elsewhere
                await _sleep_unless(run.stop, min(1.0, run.settings.claim_lease_seconds / 10))
                continue
            for item in batch.rows:
                run.tally.summary.uncertain += item.uncertain
                await queue.put(item)
    except MailerError as error:
        run.fail(error)
    finally:
        for _ in range(workers):
            await queue.put(None)


async def _flush(run: _ListSend, done: asyncio.Event) -> None:
    with contextlib.suppress(MailerError):
        while not done.is_set():
            await _sleep_unless(done, FLUSH_SECONDS)
            await run.ledger_call(run.ledger.record, run.tally.take_outcomes())


async def _heartbeat(run: _ListSend, done: asyncio.Event) -> None:
    """Renew this sender's lease on its claimed rows every third of the lease."""
    with contextlib.suppress(MailerError):
        while not done.is_set():
            await _sleep_unless(done, run.settings.claim_lease_seconds / 3)
            if not done.is_set():
                await run.ledger_call(run.ledger.renew)


async def send_to_list(
    engine: Engine, settings: Settings, issue_path: Path, list_name: str, **options: Any
) -> SendSummary:
    """Send the issue to one list: send_to_lists with one list, and its options."""
    [summary] = await send_to_lists(engine, settings, issue_path, [list_name], **options)
    return summary


async def send_to_lists(
    engine: Engine,
    settings: Settings,
    issue_path: Path,
    list_names: Sequence[str],
    *,
    force: bool = False,
    retry_failed: bool = False,
    include_permanent: bool = False,
    retry_uncertain: bool = False,
    allow_duplicates: bool = False,
    progress: Progress | None = None,
    notice: Notice | None = None,
    stop: asyncio.Event | None = None,
    finished: Callable[[SendSummary], None] | None = None,
) -> list[SendSummary]:
    """Send what the ledger says is not yet sent, list after list; returns a summary per list sent to.

    Everything is checked before the first message: every list name, and the issue (rendered once,
    refused if it is a draft, dated later without `force`, or outside the issues folder), so every
    list gets the same version of it; with check_links_before_send, its links too (BrokenLinks
    unless `force`, which then only tells `notice` of them). People who have (or are getting) the issue through another
    list are skipped, unless `allow_duplicates`. `finished` hears each list's summary as it ends;
    an interrupted list ends the run. Raises SMTPSetupError when the relay refuses the session or
    cannot be reached (the rows not attempted stay pending), LedgerError when the database goes away.
    """
    for list_name in list_names:
        await asyncio.to_thread(list_id, engine, list_name)
    guard = SendGuard(settings.issues_dir, force=force)
    built = build_issue(issue_path, settings, list_names, guard=guard)
    slug, templates = built.slug, built.templates
    secret = _secret(settings)
    if settings.check_links_before_send:
        await _check_links(built, settings, force=force, notice=notice)
    summaries: list[SendSummary] = []
    for list_name, template in zip(list_names, templates, strict=True):
        summary = await _send_one(
            engine,
            settings,
            slug,
            template,
            secret,
            list_name,
            retry_failed=retry_failed,
            include_permanent=include_permanent,
            retry_uncertain=retry_uncertain,
            allow_duplicates=allow_duplicates,
            progress=progress,
            notice=notice,
            stop=stop or asyncio.Event(),
        )
        summaries.append(summary)
        if finished is not None:
            finished(summary)
        if summary.interrupted:
            break
    return summaries


async def _check_links(built: BuiltIssue, settings: Settings, *, force: bool, notice: Notice | None) -> None:
    """check_links_before_send: every link of the very version about to go out, before any row is claimed.

    A broken link refuses the send; with `force` each one is told and the send goes on.
    """
    report = await check_links([(built.placed, built.rendered)], settings)
    if not report.broken:
        return
    if not force:
        raise BrokenLinks(report)
    if notice is not None:  # one notice: on a terminal the progress line takes only its last line
        notice("\n".join([*report.broken, "sending anyway (--force)"]))


async def _send_one(
    engine: Engine,
    settings: Settings,
    slug: str,
    template: MessageTemplate,
    secret: str,
    list_name: str,
    *,
    retry_failed: bool,
    include_permanent: bool,
    retry_uncertain: bool,
    allow_duplicates: bool,
    progress: Progress | None,
    notice: Notice | None,
    stop: asyncio.Event,
) -> SendSummary:
    summary = SendSummary(slug, list_name)
    started = time.monotonic()
    ledger = await asyncio.to_thread(
        Ledger,
        engine,
        slug,
        list_name,
        lease_seconds=settings.claim_lease_seconds,
        allow_duplicates=allow_duplicates,
    )
    try:
        await asyncio.to_thread(ledger.recover)
        prepared = await asyncio.to_thread(ledger.prepare)
        summary.skipped, summary.duplicates = prepared.skipped, prepared.covered
        if retry_failed:
            await asyncio.to_thread(ledger.reset_failed, include_permanent=include_permanent)
        if retry_uncertain:
            await asyncio.to_thread(ledger.reset_uncertain)
        run = _ListSend(
            settings=settings,
            template=template,
            ledger=ledger,
            secret=secret,
            relay=RelayContact(settings, RateLimiter(settings.rate_per_second, settings.rate_per_hour), notice),
            tally=_Tally(summary, total=await asyncio.to_thread(ledger.pending), progress=progress),
            stop=stop,
            notice=notice,
            verp=VerpAddresses(settings.bounce_address, secret) if settings.bounce_address else None,
        )
        workers = settings.smtp_pool_size
        queue: asyncio.Queue[Claimed | None] = asyncio.Queue(maxsize=workers)
        done = asyncio.Event()
        background = [asyncio.create_task(_flush(run, done)), asyncio.create_task(_heartbeat(run, done))]
        try:
            await asyncio.gather(
                _feed(run, queue, workers), *(_worker(run, queue, SMTPConnection(settings)) for _ in range(workers))
            )
        finally:
            done.set()
            await asyncio.gather(*background)
            await asyncio.to_thread(ledger.record, run.tally.take_outcomes())
            await asyncio.to_thread(ledger.release, run.tally.released)
        summary.interrupted = run.stop.is_set()
        if run.fatal is not None:
            raise run.fatal
        counts = await asyncio.to_thread(ledger.counts)
        summary.left = {
            status: counts[status] for status in (PENDING, FAILED, UNCERTAIN, "permanent") if counts.get(status)
        }
        if counts.get(SENDING):
            summary.left[PENDING] = summary.left.get(PENDING, 0) + counts[SENDING]
    finally:
        summary.seconds = time.monotonic() - started
        await asyncio.to_thread(ledger.close)
    return summary


async def send_test(settings: Settings, issue_path: Path, address: str) -> str:
    """One message to one address, outside the ledger: for proofreading in a real mail client."""
    _, template = build_template(issue_path, settings, list_name=None)
    recipient = Recipient(address, "", f"{settings.archive_url.rstrip('/')}/unsubscribe/test")
    _, data = template.message_for(recipient)
    connection = SMTPConnection(settings)
    try:
        return await connection.send(settings.bounce_address or template.sender_address, address, data)
    except DeliveryError as error:
        raise DeliveryFailed(f"{address}: not sent: {error.reply}") from None
    finally:
        await connection.close()


async def dry_run(
    engine: Engine,
    settings: Settings,
    issue_path: Path,
    list_names: Sequence[str],
    out_dir: Path,
    *,
    allow_duplicates: bool = False,
) -> int:
    """Write the .eml files of a send to these lists, byte for byte as a send makes them; send nothing, record nothing.

    One message per person, through the first of the lists that has them, and none for people the ledger shows
    have (or are getting) the issue through another list; with `allow_duplicates`, one per list and person, as
    the send would. Returns how many were written.
    """
    slug, templates = build_templates(issue_path, settings, list_names)
    secret = _secret(settings)
    ids = [list_id(engine, name) for name in list_names]
    transport = FileTransport(out_dir)
    transport.clear()
    written: set[int] = set()
    for list_name, lid, template in zip(list_names, ids, templates, strict=True):
        elsewhere = set() if allow_duplicates else copies_elsewhere(engine, slug, lid)
        for subscriber in mailable_subscribers(engine, list_name):
            if subscriber.id in elsewhere or (subscriber.id in written and not allow_duplicates):
                continue
            recipient = personal_recipient(
                settings, secret, lid, subscriber.id, subscriber.email, subscriber.name, slug
            )
            _, data = template.message_for(recipient)
            await transport.send(template.sender_address, subscriber.email, data)
            written.add(subscriber.id)
    return transport.count


async def _with_one_database_thread(coroutine: Coroutine[Any, Any, T]) -> T:
    """The ledger is used one call at a time anyway; more threads would each keep a malloc arena (~4 MB) of their own."""
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(1, thread_name_prefix="mailer-database"))
    return await coroutine


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a send on uvloop where it is installed: about a third more messages per CPU second than asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_with_one_database_thread(coroutine))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_with_one_database_thread(coroutine))
