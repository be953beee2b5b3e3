"""Fetch every link and image of a rendered issue, and say where each broken one is written.

The links are what readers get: the `href` and `src` of the email and its web version, the
issue's own URL fields and paragraph links, and the branding's. Each URL is fetched once (HEAD,
then GET where HEAD is refused), a few at a time per host, redirects followed by hand so a loop
or a hop to another scheme is caught. Per-recipient placeholders, mailto: links and the issue's
own web version (published when it is sent) are not fetched.
"""

from __future__ import annotations

import asyncio
import typing
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

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
    from mailer.compose.link_fetch import fetch_all  # httpx, only when links are checked

    return LinkReport(places, await fetch_all(places, settings))


def check_issue_links(paths: list[Path], settings: Settings) -> LinkReport:
    """`mailer check --links`: validate every file, render each in memory, then check all their links at once."""
    loaded = load_all_placed(paths, max_bytes=settings.max_issue_bytes)
    rendered = [(placed, render_issue(placed.issue, slug_of(path), settings)) for path, placed in loaded]
    return asyncio.run(check_links(rendered, settings))
