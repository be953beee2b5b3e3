"""The public web behind every email's links (mailer serve): archive, web versions, unsubscribe, subscribe.

- Unsubscribe links carry a signed token (unsubscribe.py). GET only shows a page with a
  button, because mail scanners follow links; POST unsubscribes. A POST whose body is
  `List-Unsubscribe=One-Click` (RFC 8058, sent by Gmail and Yahoo) unsubscribes at once.
- Subscribing is double opt-in: the form mails a signed, expiring link (confirmation.py) in
  the background and answers the same whatever the address, so nobody can probe who is
  subscribed; only the link's button subscribes. Forms carry a CSRF token tied to a cookie;
  subscribe requests are limited per IP address.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import email.policy
import email.utils
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from mailer.audience.addresses import InvalidAddress, normalise_email
from mailer.audience.clean_text import clean_text
from mailer.audience.confirmation_log import may_send_confirmation
from mailer.audience.database import SUBSCRIBED, UNSUBSCRIBED, open_database
from mailer.audience.lists import (
    Membership,
    PublicList,
    add_subscriber,
    find_subscriber_id,
    list_name_of,
    membership,
    public_list,
    suppression_reason,
    unsubscribe,
    unsubscribe_from_list,
)
from mailer.delivery.bounces import record_unsubscribe
from mailer.delivery.sent_issues import went_out
from mailer.delivery.smtp import DeliveryError, SMTPConnection
from mailer.delivery.unsubscribe import BadToken, read_token
from mailer.errors import ConfigError, MailerError
from mailer.settings import Settings, load_settings
from mailer.web import archive
from mailer.web.confirmation import SubscribeRequest, confirmation_message, make_confirm_token, read_confirm_token
from mailer.web.pages import page_templates

CSRF_COOKIE = "mailer_csrf"
ONE_CLICK = "One-Click"
MAX_NAME = 200
log = logging.getLogger("mailer.serve")

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src https: http: data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
"""Token pages must not leak their URL (Referer) nor be framed (clickjacking the button)."""


class AttemptsPerIP:
    """A sliding window of requests per client IP, in memory (per worker process)."""

    def __init__(self, limit: int, window_seconds: float = 3600, max_addresses: int = 100_000) -> None:
        self.limit = limit
        self.window = window_seconds
        self.max_addresses = max_addresses
        self._seen: collections.OrderedDict[str, collections.deque[float]] = collections.OrderedDict()

    def allow(self, address: str) -> bool:
        now = time.monotonic()
        stamps = self._seen.pop(address, None) or collections.deque()
        while stamps and now - stamps[0] > self.window:
            stamps.popleft()
        allowed = len(stamps) < self.limit
        if allowed:
            stamps.append(now)
        self._seen[address] = stamps
        while len(self._seen) > self.max_addresses:
            self._seen.popitem(last=False)
        return allowed


def masked(address: str) -> str:
    """Enough of an address for its owner to recognise it, not enough to harvest it from a forwarded link."""
    local, _, domain = address.partition("@")
    return f"{local[:2]}•••@{domain}"


@dataclass
class PublicWeb:
    settings: Settings
    engine: Engine
    secret: str
    limiter: AttemptsPerIP
    now: Callable[[], float] = time.time
    """The clock of confirmation links (their time stamp and expiry); tests pass their own."""
    reported: set[str] = field(default_factory=set)
    """Archive warnings already logged by this worker."""

    def __post_init__(self) -> None:
        self.pages = page_templates("public_page")

    # --- pages, CSRF ---------------------------------------------------------------------------

    def csrf_value(self, cookie: str) -> str:
        return hmac.new(self.secret.encode(), b"csrf:" + cookie.encode(), hashlib.sha256).hexdigest()[:40]

    def page(
        self,
        request: Request,
        template: str,
        *,
        status: int = 200,
        background: BackgroundTask | None = None,
        **context: Any,
    ) -> Response:
        cookie = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
        html = self.pages.get_template(template).render(
            branding=self.settings.branding, csrf=self.csrf_value(cookie), **context
        )
        response = HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS, background=background)
        response.headers["Cache-Control"] = "no-store"
        if request.cookies.get(CSRF_COOKIE) != cookie:
            response.set_cookie(
                CSRF_COOKIE,
                cookie,
                httponly=True,
                samesite="lax",
                secure=self.settings.archive_url.startswith("https:") and request.url.scheme == "https",
            )
        return response

    def csrf_ok(self, request: Request, form: FormData) -> bool:
        cookie = request.cookies.get(CSRF_COOKIE)
        sent = form.get("csrf")
        return bool(cookie) and isinstance(sent, str) and hmac.compare_digest(sent, self.csrf_value(cookie or ""))

    def expired_form(self, request: Request) -> Response:
        return self.page(
            request,
            "message.html",
            status=403,
            title="Please try again",
            text="This form has expired. Reload the page and send it again.",
        )

    def invalid_link(self, request: Request, text: str = "This link is not valid.") -> Response:
        return self.page(request, "message.html", status=400, title="Link not valid", text=text)

    # --- unsubscribe ---------------------------------------------------------------------------

    async def _member(self, token: str) -> Membership | None:
        try:
            subscriber_id, list_id, _ = read_token(self.secret, token)
        except BadToken:
            return None
        return await run_in_threadpool(membership, self.engine, subscriber_id, list_id)

    async def _unsubscribe(self, token: str, member: Membership, *, everywhere: bool, how: str) -> None:
        """End the membership (or suppress the address), and count it against the issue whose link it was."""
        if everywhere:
            await run_in_threadpool(unsubscribe, self.engine, member.email, reason="unsubscribed", note="web")
            ended = True
        else:
            ended = await run_in_threadpool(unsubscribe_from_list, self.engine, member.subscriber_id, member.list_id)
        if ended:
            issue = read_token(self.secret, token).issue
            await run_in_threadpool(record_unsubscribe, self.engine, member.subscriber_id, member.list_id, issue, how)

    async def unsubscribe_page(self, request: Request) -> Response:
        member = await self._member(request.path_params["token"])
        if member is None:
            return self.invalid_link(request)
        return self.page(
            request,
            "unsubscribe.html",
            address=masked(member.email),
            list_title=member.list_description or member.list_name,
            subscribed=member.status == SUBSCRIBED,
        )

    async def unsubscribe_post(self, request: Request) -> Response:
        member = await self._member(request.path_params["token"])
        form = await request.form()
        if form.get("List-Unsubscribe") == ONE_CLICK:
            if member is None:
                return PlainTextResponse("this unsubscribe link is not valid", status_code=400)
            await self._unsubscribe(request.path_params["token"], member, everywhere=False, how="one-click")
            log.info("one-click unsubscribe: subscriber %s from list %s", member.subscriber_id, member.list_name)
            return PlainTextResponse("unsubscribed", headers=SECURITY_HEADERS)
        if member is None:
            return self.invalid_link(request)
        if not self.csrf_ok(request, form):
            return self.expired_form(request)
        everywhere = form.get("scope") == "all"
        await self._unsubscribe(
            request.path_params["token"], member, everywhere=everywhere, how="all lists" if everywhere else "this list"
        )
        log.info(
            "unsubscribe: subscriber %s from %s", member.subscriber_id, "all lists" if everywhere else member.list_name
        )
        return self.page(
            request,
            "unsubscribed.html",
            address=masked(member.email),
            list_title=member.list_description or member.list_name,
            everywhere=everywhere,
        )

    # --- subscribe -----------------------------------------------------------------------------

    async def _public_list(self, request: Request) -> PublicList | None:
        return await run_in_threadpool(public_list, self.engine, request.path_params["list"])

    async def subscribe_page(self, request: Request) -> Response:
        mailing_list = await self._public_list(request)
        if mailing_list is None:
            return self.page(request, "message.html", status=404, title="Not found", text="There is no such list.")
        return self.page(request, "subscribe.html", mailing_list=mailing_list, name="", email="", error="")

    async def subscribe_post(self, request: Request) -> Response:
        mailing_list = await self._public_list(request)
        if mailing_list is None:
            return self.page(request, "message.html", status=404, title="Not found", text="There is no such list.")
        form = await request.form()
        if not self.csrf_ok(request, form):
            return self.expired_form(request)
        client = request.client.host if request.client else "unknown"
        if not self.limiter.allow(client):
            return self.page(
                request,
                "message.html",
                status=429,
                title="Too many requests",
                text="Too many subscribe requests from your network. Please try again in an hour.",
            )
        name = clean_text(str(form.get("name") or ""))[:MAX_NAME].rstrip()
        typed = str(form.get("email") or "")[:320]
        try:
            address, key = normalise_email(typed, special_use_domains=self.settings.special_use_domains)
        except InvalidAddress:
            return self.page(
                request,
                "subscribe.html",
                status=400,
                mailing_list=mailing_list,
                name=name,
                email=typed,
                error="Please enter a valid email address.",
            )
        token = make_confirm_token(self.secret, mailing_list.id, address, name, now=self.now)
        link = f"{self.settings.archive_url.rstrip('/')}/confirm/{token}"
        task = BackgroundTask(self.send_confirmation, mailing_list, address, key, name, link)
        return self.page(request, "check_inbox.html", mailing_list=mailing_list, background=task)

    async def send_confirmation(self, mailing_list: PublicList, address: str, key: str, name: str, link: str) -> None:
        """After the response, so its timing says nothing about the address.

        Suppressed addresses get nothing, and no address gets more than one mail in 10 minutes or
        `confirm_per_address_per_day` a day, whoever asks and from wherever: the visitor's answer is the same.
        """

        def allowed() -> bool:
            with self.engine.connect() as conn:
                if suppression_reason(conn, key) is not None:
                    return False
            stamp = dt.datetime.fromtimestamp(self.now(), dt.UTC)
            per_day = self.settings.confirm_per_address_per_day
            if may_send_confirmation(self.engine, key, per_day=per_day, now=stamp):
                return True
            log.info("confirmation mail for list %s held back: sent to this address recently", mailing_list.name)
            return False

        if not await run_in_threadpool(allowed):
            return
        message = confirmation_message(self.settings, mailing_list, address, name, link)
        connection = SMTPConnection(self.settings)
        try:
            await connection.send(
                email.utils.parseaddr(self.settings.sender or "")[1],
                address,
                message.as_bytes(policy=email.policy.SMTP),
            )
        except (DeliveryError, MailerError) as error:
            log.warning("confirmation mail for list %s not sent: %s", mailing_list.name, error)
        finally:
            await connection.close()

    def _subscribe_request(self, request: Request) -> SubscribeRequest | Response:
        try:
            return read_confirm_token(
                self.secret, request.path_params["token"], max_age_hours=self.settings.confirm_hours, now=self.now
            )
        except BadToken as error:
            return self.invalid_link(request, str(error).capitalize() + ".")

    async def confirm_page(self, request: Request) -> Response:
        wanted = self._subscribe_request(request)
        if isinstance(wanted, Response):
            return wanted
        return self.page(request, "confirm.html", address=masked(wanted.email))

    async def confirm_post(self, request: Request) -> Response:
        wanted = self._subscribe_request(request)
        if isinstance(wanted, Response):
            return wanted
        form = await request.form()
        if not self.csrf_ok(request, form):
            return self.expired_form(request)
        outcome = await run_in_threadpool(self._confirm, wanted)
        return self.page(request, "message.html", status=200 if outcome[0] else 409, title=outcome[1], text=outcome[2])

    def _confirm(self, wanted: SubscribeRequest) -> tuple[bool, str, str]:
        engine, address = self.engine, wanted.email
        mailing = None
        sid = find_subscriber_id(engine, address)
        if sid is not None:
            mailing = membership(engine, sid, wanted.list_id)
        if mailing is not None and mailing.status == SUBSCRIBED:
            return (
                True,
                "You are subscribed",
                f"{masked(address)} already receives {mailing.list_description or mailing.list_name}.",
            )
        if mailing is not None and mailing.status == UNSUBSCRIBED and mailing.changed_at is not None:
            changed = (
                mailing.changed_at
                if mailing.changed_at.tzinfo
                else mailing.changed_at.replace(tzinfo=wanted.issued.tzinfo)
            )
            if changed >= wanted.issued:
                return (
                    False,
                    "Link already used",
                    "This address unsubscribed after this link was sent; subscribe again to receive it.",
                )
        list_name = list_name_of(engine, wanted.list_id)
        if list_name is None:
            return False, "Link not valid", "This list no longer exists."
        if public_list(engine, list_name) is None:
            return False, "Link not valid", "This list no longer takes subscriptions on the web."
        try:
            add_subscriber(
                engine, list_name, address, name=wanted.name, special_use_domains=self.settings.special_use_domains
            )
        except MailerError:
            return (
                False,
                "Not subscribed",
                "This address cannot be subscribed. Contact us if you think this is a mistake.",
            )
        log.info("subscribe confirmed: list %s", list_name)
        return True, "You are subscribed", f"Thank you: {masked(address)} will receive the next issue."

    # --- archive ------------------------------------------------------------------------------

    def unavailable(self, request: Request, error: MailerError) -> Response:
        """A broken template or a missing issues folder: the operator's problem, logged; visitors get a 500."""
        log.error("archive: %s", "; ".join(error.lines()))
        return self.page(
            request, "message.html", status=500, title="Not available", text="This page is not available right now."
        )

    def went_out(self, slugs: Collection[str]) -> Collection[str]:
        return went_out(self.engine, slugs)

    def scan(self) -> archive.ArchiveScan:
        """The archive as it is now; what it leaves out is logged once per reason, as mailer publish prints it."""
        scan = archive.scan_archive(self.settings.issues_dir, self.settings, sent=self.went_out)
        for line in scan.report():
            if line not in self.reported:
                self.reported.add(line)
                log.warning("archive: %s", line)
        return scan

    async def _published(self, request: Request) -> list[archive.ArchiveEntry] | Response:
        try:
            scan = await run_in_threadpool(self.scan)
        except MailerError as error:
            return self.unavailable(request, error)
        return scan.entries

    async def index(self, request: Request) -> Response:
        entries = await self._published(request)
        if isinstance(entries, Response):
            return entries
        return HTMLResponse(archive.index_page(entries, self.settings), headers=SECURITY_HEADERS)

    async def feed(self, request: Request) -> Response:
        entries = await self._published(request)
        if isinstance(entries, Response):
            return entries
        return Response(archive.atom_feed(entries, self.settings), media_type="application/atom+xml; charset=utf-8")

    async def web_version(self, request: Request) -> Response:
        slug = request.path_params["slug"]
        try:
            html = await run_in_threadpool(
                partial(archive.web_page, sent=self.went_out), self.settings.issues_dir, slug, self.settings
            )
        except MailerError as error:
            return self.unavailable(request, error)
        if html is None:
            return self.page(request, "message.html", status=404, title="Not found", text="There is no such issue.")
        return HTMLResponse(html, headers=SECURITY_HEADERS)

    async def web_image(self, request: Request) -> Response:
        """A local image of a published issue; its name holds a hash of its bytes, so it never changes: cache it."""
        try:
            image = await run_in_threadpool(
                partial(archive.web_image, sent=self.went_out),
                self.settings.issues_dir,
                request.path_params["slug"],
                request.path_params["name"],
                self.settings,
            )
        except MailerError as error:
            return self.unavailable(request, error)
        if image is None:
            return PlainTextResponse("no such image", status_code=404, headers=SECURITY_HEADERS)
        headers = {**SECURITY_HEADERS, "Cache-Control": "public, max-age=31536000, immutable"}
        return Response(image.data, media_type=image.media_type, headers=headers)

    async def web_version_redirect(self, request: Request) -> Response:
        return RedirectResponse(f"{request.url.path}/", status_code=308)


def _routes(web: PublicWeb) -> list[Route]:
    return [
        Route("/", web.index),
        Route("/feed.xml", web.feed),
        Route("/unsubscribe/{token}", web.unsubscribe_page, methods=["GET"]),
        Route("/unsubscribe/{token}", web.unsubscribe_post, methods=["POST"]),
        Route("/subscribe/{list}", web.subscribe_page, methods=["GET"]),
        Route("/subscribe/{list}", web.subscribe_post, methods=["POST"]),
        Route("/confirm/{token}", web.confirm_page, methods=["GET"]),
        Route("/confirm/{token}", web.confirm_post, methods=["POST"]),
        Route("/{slug}/images/{name}", web.web_image),
        Route("/{slug}/", web.web_version),
        Route("/{slug}", web.web_version_redirect),
    ]


def check_serve_settings(settings: Settings) -> str:
    """What serving needs, checked at start: the public URL, the secret, a sender for confirmation mail."""
    settings.archive_url  # noqa: B018 - raises ConfigError with advice when public_url is missing
    if settings.unsubscribe_secret is None:
        raise ConfigError("unsubscribe_secret is not set; mailer serve verifies the links sends signed with it")
    if not settings.sender:
        raise ConfigError("sender is not set; mailer serve mails subscription confirmations from it")
    return settings.unsubscribe_secret.get_secret_value()


def create_app(settings: Settings, engine: Engine, *, now: Callable[[], float] = time.time) -> Starlette:
    secret = check_serve_settings(settings)
    web = PublicWeb(settings, engine, secret, AttemptsPerIP(settings.subscribe_per_ip_per_hour), now)
    with contextlib.suppress(MailerError):  # mailer serve printed these at start; log only what changes later
        web.reported.update(archive.scan_archive(settings.issues_dir, settings, sent=web.went_out).report())
    return Starlette(routes=_routes(web))


def app_from_environment() -> Starlette:
    """The app for uvicorn's workers: settings from $MAILER_CONFIG and the environment, as the CLI set them."""
    settings = load_settings()
    return create_app(settings, open_database(settings.database_url))
