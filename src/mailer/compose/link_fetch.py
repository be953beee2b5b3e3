"""Fetching the URLs of a link check: one httpx client, a few requests at a time per host, redirects by hand.

Its own module so that httpx (some 4 MB) is imported only when links are checked, not by every send.
"""

from __future__ import annotations

import asyncio
import http
import socket
import ssl
from collections import defaultdict
from collections.abc import Iterable, Iterator
from importlib.metadata import version
from urllib.parse import urldefrag, urljoin, urlsplit

import httpx

from mailer.compose.link_check import Outcome
from mailer.settings import Settings

TOTAL_AT_ONCE = 16
PER_HOST_AT_ONCE = 3
MAX_REDIRECTS = 10
REDIRECTS = frozenset({301, 302, 303, 307, 308})
TOO_MANY_REQUESTS = 429


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
