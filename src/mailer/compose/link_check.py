"""Fetch every link and image of a rendered issue, and say where each broken one is written.

The links are what readers get: the `href` and `src` of the email and its web version, the
issue's own URL fields and paragraph links, and the branding's. Each URL is fetched once (HEAD,
then GET where HEAD is refused), a few at a time per host, redirects followed by hand so a loop
or a hop to another scheme is caught. Per-recipient placeholders, mailto: links and the issue's
own web version (published when it is sent) are not fetched.
"""

from __future__ import annotations

import asyncio
import http
import socket
import ssl
import typing
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from importlib.metadata import version
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlsplit

import httpx

from mailer.compose.build import load_all_placed
from mailer.compose.issues_folder import slug_of
from mailer.compose.load import Loc, PlacedIssue, field_at, format_loc
from mailer.compose.markup import check_markup, links_in
from mailer.compose.model import ImageSource
from mailer.compose.render import RenderedIssue, render_issue
from mailer.compose.templates import default_templates_dir
from mailer.errors import MailerError
from mailer.settings import Settings
from mailer.urls import Url
from mailer.wording import plural

TOTAL_AT_ONCE = 16
PER_HOST_AT_ONCE = 3
MAX_REDIRECTS = 10
REDIRECTS = frozenset({301, 302, 303, 307, 308})
PERMANENT = frozenset({301, 308})


@dataclass(frozen=True)
class Place:
    """Where a URL is written: a field of an issue file, a setting, or the templates."""

    order: tuple[int, str, int, int]
    prefix: str
    """`issues/2016-02.yaml:26:16: news.stories[0].links[0].url`, `mailer.toml:9: branding.logo.src`."""

    def line(self, message: str) -> str:
        return f"{self.prefix}: {message}"


LinkPlaces = dict[str, list[Place]]
"""Each URL to check, with every place it is written."""


def _is_web(url: str) -> bool:
    return urlsplit(url).scheme.lower() in ("http", "https") and "{{" not in url


class _Targets(HTMLParser):
    """Every href and src, also those inside Outlook's conditional comments (its VML buttons)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found += [value.strip() for name, value in attrs if name in ("href", "src") and value]

    def handle_comment(self, data: str) -> None:
        if data.startswith("[if"):
            inner = _Targets()
            inner.feed(data)
            inner.close()
            self.found += inner.found


def _targets(html: str) -> list[str]:
    parser = _Targets()
    parser.feed(html)
    parser.close()
    return parser.found


def _issue_places(placed: PlacedIssue) -> Iterator[tuple[str, Place]]:
    """The URL fields and paragraph links of the issue, at the line and column where each is written."""
    for loc, value in placed.strings():
        info = field_at(loc)
        checks = _checks_of(info.annotation, info.metadata) if info else set()
        if checks & URL_CHECKS:
            yield value.strip(), _issue_place(placed, loc)
        elif check_markup in checks:
            for href in links_in(value):
                offset = value.find(href)
                yield href, _issue_place(placed, loc, value=value, offset=offset if offset >= 0 else None)


def _checks_of(annotation: object, metadata: Iterable[object] = ()) -> set[object]:
    """The after-validators of a field, through Annotated, Optional and list: which fields hold URLs or markup."""
    found = {getattr(item, "func", None) for item in metadata}
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        found |= _checks_of(args[0], args[1:])
    elif args:
        for arg in args:
            found |= _checks_of(arg)
    return found


URL_CHECKS = (_checks_of(Url) | _checks_of(ImageSource)) - {None}
"""The validators of the fields that hold a URL (an image's src may also be a local file, then not fetched)."""


def _issue_place(placed: PlacedIssue, loc: Loc, *, value: str = "", offset: int | None = None) -> Place:
    problem = placed.problem(loc, "", value=value, offset=offset)
    return Place((0, problem.path, problem.line, problem.column), str(problem).removesuffix(": "))


def _setting_place(settings: Settings, loc: tuple[str | int, ...]) -> Place:
    """`mailer.toml:9: branding.logo.src`, `MAILER_PUBLIC_URL=...: public_url`, or the setting alone."""
    sources = type(settings).read_from
    origin = sources.origin(loc) if sources else None
    prefix = origin.problem(loc, "").removesuffix(": ") if origin and origin.kind != "flag" else format_loc(loc)
    return Place((1, prefix, 0, 0), prefix)


def _setting_urls(settings: Settings) -> Iterator[tuple[str, tuple[str | int, ...]]]:
    branding = settings.branding
    if settings.public_url:
        yield settings.archive_url, ("public_url",)
    if branding.website:
        yield branding.website, ("branding", "website")
    if branding.logo:
        yield branding.logo.src, ("branding", "logo", "src")
    for index, account in enumerate(branding.social):
        yield account.url, ("branding", "social", index, "url")
        yield account.icon, ("branding", "social", index, "icon")


def link_places(placed: PlacedIssue, rendered: RenderedIssue, settings: Settings) -> LinkPlaces:
    """Every web URL of the rendered issue and of its content, with the places it is written."""
    places: LinkPlaces = defaultdict(list)
    for url, place in _issue_places(placed):
        places[url].append(place)
    for url, loc in _setting_urls(settings):
        places[url].append(_setting_place(settings, loc))
    own = settings.web_url(rendered.slug)  # the web version and its local images: published when it is sent
    templates = str(settings.templates_dir or default_templates_dir())
    for url in _targets(rendered.email_html) + _targets(rendered.web_html):
        if url not in places:
            places[url].append(Place((2, templates, 0, 0), templates))
    return {url: found for url, found in places.items() if _is_web(url) and not url.startswith(own)}


TOO_MANY_REQUESTS = 429


@dataclass(frozen=True)
class Outcome:
    """What fetching one URL came to."""

    url: str
    problem: str | None = None
    """Why it is broken ("404 Not Found", "connection refused"...); None when it works."""
    hops: tuple[tuple[int, str], ...] = ()
    """Each redirect followed: its status and where it led."""
    status: int | None = None
    """The status of the last answer; None when there was none."""
    broke_off: bool = False
    """The server answered, but not with a whole HTTP response."""

    @property
    def final(self) -> str:
        return self.hops[-1][1] if self.hops else self.url

    @property
    def permanent(self) -> bool:
        return any(status in PERMANENT for status, _ in self.hops)


def user_agent(settings: Settings) -> str:
    """Names mailer and where its operator publishes, so a site owner seeing the requests knows whose they are."""
    return f"mailer-link-check/{version('mailer')}" + (f" (+{settings.public_url})" if settings.public_url else "")


def _cause(error: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = error
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def _connect_problem(error: httpx.ConnectError) -> str:
    for cause in _cause(error):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"invalid TLS certificate ({cause.verify_message})"
        if isinstance(cause, ssl.SSLError):
            return f"TLS failed ({cause.reason or cause})"
        if isinstance(cause, socket.gaierror):
            return "DNS lookup failed (no such host)"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
    text = str(error)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return f"invalid TLS certificate ({text})"
    if "Name or service not known" in text or "nodename nor servname" in text or "getaddrinfo" in text:
        return "DNS lookup failed (no such host)"
    if "refused" in text.lower():
        return "connection refused"
    return f"cannot connect ({text or type(error).__name__})"


def _status_text(status: int, reason: str) -> str:
    try:
        return f"{status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} {reason}".strip()


class _Checker:
    """One client, at most TOTAL_AT_ONCE requests in flight and PER_HOST_AT_ONCE to any one host."""

    def __init__(self, client: httpx.AsyncClient, timeout: float) -> None:
        self.client = client
        self.timeout = timeout
        self.total = asyncio.Semaphore(TOTAL_AT_ONCE)
        self.hosts: defaultdict[str, asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(PER_HOST_AT_ONCE))

    async def request(self, method: str, url: str) -> httpx.Response | Outcome:
        """The response (its body left unread), or why there was none."""
        parts = urlsplit(url)
        async with self.hosts[f"{parts.scheme}://{parts.netloc}".lower()], self.total:
            try:
                async with asyncio.timeout(self.timeout):
                    response = await self.client.send(self.client.build_request(method, url), stream=True)
                    await response.aclose()
                    return response
            except (TimeoutError, httpx.TimeoutException):
                return Outcome(url, f"timed out (no answer within {self.timeout:g} s)")
            except httpx.ConnectError as error:
                return Outcome(url, _connect_problem(error))
            except httpx.InvalidURL as error:
                return Outcome(url, f"not a URL that can be fetched ({error})")
            except httpx.HTTPError as error:
                return Outcome(url, f"no proper answer ({error or type(error).__name__})", broke_off=True)

    async def follow(self, method: str, url: str) -> Outcome:
        hops: list[tuple[int, str]] = []
        seen = {url}
        current = url
        while True:
            response = await self.request(method, current)
            after = f" (after a redirect to {current})" if hops else ""
            if isinstance(response, Outcome):
                return Outcome(url, f"{response.problem}{after}", tuple(hops), broke_off=response.broke_off)
            status = response.status_code
            location = response.headers.get("location")
            if status in REDIRECTS and location:
                target = urljoin(current, location.strip())
                hops.append((status, target))
                if urlsplit(target).scheme.lower() not in ("http", "https"):
                    return Outcome(url, f"redirects to {target}, which is not http(s) (not followed)", tuple(hops))
                if target in seen:
                    chain = " -> ".join([url, *(hop for _, hop in hops)])
                    return Outcome(url, f"redirect loop ({chain})", tuple(hops))
                if len(hops) > MAX_REDIRECTS:
                    return Outcome(url, f"too many redirects (more than {MAX_REDIRECTS})", tuple(hops))
                seen.add(target)
                current = target
                continue
            if status == TOO_MANY_REQUESTS:  # the server is busy, or limits us: nothing says the link is dead
                return Outcome(url, None, tuple(hops), status)
            if status >= 400:
                return Outcome(url, _status_text(status, response.reason_phrase) + after, tuple(hops), status)
            return Outcome(url, None, tuple(hops), status)

    async def check(self, url: str) -> Outcome:
        """HEAD first; GET when HEAD gets an error status or a broken answer (many servers mishandle HEAD)."""
        outcome = await self.follow("HEAD", url)
        timed_out = outcome.problem is not None and outcome.problem.startswith("timed out")
        if outcome.problem is not None and (outcome.status is not None or outcome.broke_off or timed_out):
            outcome = await self.follow("GET", url)
        return outcome


async def fetch_all(urls: Iterable[str], settings: Settings) -> dict[str, Outcome]:
    """Each URL fetched once (fragments aside), concurrently and politely."""
    wanted = {url: urldefrag(url)[0] for url in urls}
    limits = httpx.Limits(max_connections=TOTAL_AT_ONCE, max_keepalive_connections=TOTAL_AT_ONCE)
    async with httpx.AsyncClient(
        follow_redirects=False,
        timeout=httpx.Timeout(settings.link_check_timeout),
        limits=limits,
        headers={"User-Agent": user_agent(settings)},
    ) as client:
        checker = _Checker(client, settings.link_check_timeout)
        fetched = sorted(set(wanted.values()))
        outcomes = dict(zip(fetched, await asyncio.gather(*map(checker.check, fetched)), strict=True))
    return {url: outcomes[bare] for url, bare in wanted.items()}


def _kind(outcome: Outcome) -> str:
    if outcome.problem is not None:
        return "error"
    if outcome.hops:
        return "warning" if outcome.permanent else "note"
    return "ok"


def _message(outcome: Outcome) -> str:
    if outcome.problem is not None:
        return f"{outcome.problem}: {outcome.url}"
    if outcome.permanent:
        return f"warning: {outcome.url} redirects permanently to {outcome.final}; link there instead"
    return f"note: {outcome.url} redirects to {outcome.final}"


@dataclass
class LinkReport:
    places: Mapping[str, Sequence[Place]]
    outcomes: Mapping[str, Outcome] = field(default_factory=dict)

    def _lines(self, kinds: Collection[str]) -> list[tuple[str, str]]:
        """(kind, line) for each place of each link of these kinds, in the order of the places."""
        found = sorted(
            (place.order, place.line(_message(outcome)), _kind(outcome))
            for url, outcome in self.outcomes.items()
            if _kind(outcome) in kinds
            for place in self.places[url]
        )
        return [(kind, line) for _, line, kind in found]

    @property
    def broken(self) -> list[str]:
        """One line per place a broken link is written."""
        return [line for _, line in self._lines({"error"})]

    def lines(self) -> list[tuple[str, str]]:
        """(kind, line) for every broken link ("error"), permanent redirect ("warning") and other redirect ("note")."""
        return self._lines({"error", "warning", "note"})

    def summary(self) -> str:
        outcomes = self.outcomes.values()
        broken = sum(outcome.problem is not None for outcome in outcomes)
        redirected = sum(outcome.problem is None and bool(outcome.hops) for outcome in outcomes)
        return f"{plural(len(self.outcomes), 'link')} checked, {broken} broken, {redirected} redirected"


class BrokenLinks(MailerError):
    """A send refused because a link of the issue is broken: each one with its place, then what to do."""

    def __init__(self, report: LinkReport) -> None:
        self.report = report
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        count = sum(outcome.problem is not None for outcome in self.report.outcomes.values())
        return [
            *self.report.broken,
            f"not sent: {plural(count, 'broken link')} (check_links_before_send is on); fix them, "
            "or pass --force to send anyway",
        ]


async def check_links(issues: Iterable[tuple[PlacedIssue, RenderedIssue]], settings: Settings) -> LinkReport:
    """Fetch every link of these rendered issues once; the report says where each broken one is written."""
    places: dict[str, list[Place]] = defaultdict(list)
    for placed, rendered in issues:
        for url, found in link_places(placed, rendered, settings).items():
            places[url] += [place for place in found if place not in places[url]]
    return LinkReport(places, await fetch_all(places, settings))


def check_issue_links(paths: list[Path], settings: Settings) -> LinkReport:
    """`mailer check --links`: validate every file, render each in memory, then check all their links at once."""
    loaded = load_all_placed(paths, max_bytes=settings.max_issue_bytes)
    rendered = [(placed, render_issue(placed.issue, slug_of(path), settings)) for path, placed in loaded]
    return asyncio.run(check_links(rendered, settings))
