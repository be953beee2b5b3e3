"""Read a news feed (RSS 2.0 or Atom) from a file or an http(s) URL into plain-text items.

URLs are fetched here, with a timeout and only to http(s) addresses; feedparser is handed the
bytes and never opens a connection of its own. HTML in the feed becomes paragraphs of plain
text: block elements break paragraphs, entities are decoded, scripts, styles and images vanish.
A missing file, an unreachable URL or a document that is not a feed is one line naming it.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import http.client
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit
from xml.sax import SAXException, SAXParseException

import feedparser

from mailer.compose.input_file import read_input
from mailer.errors import MailerError

DEFAULT_TIMEOUT = 20.0
MAX_FEED_BYTES = 20 * 1024 * 1024
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_LANGUAGE = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})*")
_BLOCK_TAGS = frozenset(
    "address article aside blockquote dd div dl dt figcaption figure footer form h1 h2 h3 h4 h5 h6 header hr "  # noqa: SIM905
    "li main nav ol p pre section table tbody td tfoot th thead tr ul".split()
)
_HEADING_TAGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_DROPPED_TAGS = frozenset(
    "script style template noscript iframe object svg math head title select textarea".split()  # noqa: SIM905
)


@dataclass(frozen=True)
class FeedItem:
    """One feed entry, reduced to what a story needs; `bodies` are (text, is_html), description first."""

    title: str
    link: str | None
    date: dt.date | None
    bodies: tuple[tuple[str, bool], ...]


@dataclass(frozen=True)
class Feed:
    source: str
    title: str | None
    link: str | None
    language: str | None
    items: tuple[FeedItem, ...]
    problem: str | None = None
    """Why the document is not well-formed, when feedparser read it only as far as it could."""


class _RedirectsToHttpOnly(urllib.request.HTTPRedirectHandler):
    """urllib would follow a redirect to ftp:; a feed URL may only lead to another http(s) URL."""

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        if urlsplit(newurl).scheme not in ("http", "https"):
            raise MailerError(f"{req.full_url}: redirects to {newurl!r}, which is not an http(s) URL")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def is_url(source: str) -> bool:
    return urlsplit(source).scheme in ("http", "https")


def _fetch(url: str, *, timeout: float) -> tuple[bytes, dict[str, str]]:
    """GET the feed with a timeout; every way it can fail is one line naming the URL."""
    request = urllib.request.Request(
        url,
        headers={
            "User-Agent": "mailer-draft/1 (newsletter drafting)",
            "Accept": "application/rss+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.1",
        },
    )
    opener = urllib.request.build_opener(_RedirectsToHttpOnly)
    try:
        with opener.open(request, timeout=timeout) as response:
            if not 200 <= response.status < 300:
                raise MailerError(f"{url}: the server answered {response.status} {response.reason}, not the feed")
            data = response.read(MAX_FEED_BYTES + 1)
            headers = {"content-location": response.geturl(), "content-type": response.headers.get("content-type", "")}
    except urllib.error.HTTPError as error:
        raise MailerError(f"{url}: the server answered {error.code} {error.reason}, not the feed") from None
    except urllib.error.URLError as error:
        if isinstance(error.reason, TimeoutError):
            raise MailerError(f"{url}: no answer within {timeout:g} s; try again later or raise --timeout") from None
        reason = getattr(error.reason, "strerror", None) or str(error.reason)
        raise MailerError(f"{url}: cannot connect: {reason}") from None
    except TimeoutError:
        raise MailerError(f"{url}: no answer within {timeout:g} s; try again later or raise --timeout") from None
    except (http.client.HTTPException, OSError) as error:
        raise MailerError(f"{url}: the connection failed: {getattr(error, 'strerror', None) or error}") from None
    if len(data) > MAX_FEED_BYTES:
        raise MailerError(f"{url}: larger than {MAX_FEED_BYTES // 2**20} MB; that is not a news feed")
    return data, headers


def _entry_date(entry: Any) -> dt.date | None:
    """The day as the feed wrote it: feedparser's parsed dates are in UTC and may move an item a day."""
    for key in ("published", "updated", "created"):
        raw = entry.get(key)
        if not raw:
            continue
        try:
            return email.utils.parsedate_to_datetime(raw).date()
        except (TypeError, ValueError, IndexError):
            pass
        try:
            return dt.datetime.fromisoformat(raw.strip()).date()
        except ValueError:
            pass
        parsed = entry.get(f"{key}_parsed")
        if parsed:
            return dt.date(parsed.tm_year, parsed.tm_mon, parsed.tm_mday)
    return None


def _detail_text(detail: Any, fallback: str) -> tuple[str, bool]:
    kind = str(detail.get("type", "")) if detail else ""
    return str(detail.get("value", fallback) if detail else fallback), "html" in kind


def read_feed(source: str, *, timeout: float = DEFAULT_TIMEOUT) -> Feed:
    """Read RSS or Atom from a file or an http(s) URL into plain items; not a feed is a one-line error."""
    if is_url(source):
        parts = urlsplit(source)
        if parts.username is not None or parts.password is not None:
            hidden = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
            raise MailerError(f"{hidden}: user names and passwords in feed URLs are not supported")
        data, headers = _fetch(source, timeout=timeout)
        base: str | None = headers["content-location"]
    elif "://" in source:
        raise MailerError(f"{source}: only http(s) URLs and local files can be read")
    else:
        data, headers, base = read_input(Path(source), what="a feed", max_bytes=MAX_FEED_BYTES), {}, None
    parsed = feedparser.parse(data, response_headers=headers)
    if not parsed.entries and (parsed.bozo or not parsed.version):
        reason = _reason(parsed.get("bozo_exception")) or "no RSS or Atom elements in it"
        raise MailerError(f"{source}: not an RSS or Atom feed ({reason})")
    channel = parsed.feed
    link = _absolute(channel.get("link"), base)
    items = []
    for entry in parsed.entries:
        title, title_html = _detail_text(entry.get("title_detail"), entry.get("title", ""))
        bodies = []
        if entry.get("summary"):
            bodies.append(_detail_text(entry.get("summary_detail"), entry.get("summary", "")))
        bodies.extend(
            (str(part.get("value", "")), "html" in str(part.get("type", ""))) for part in entry.get("content", [])
        )
        items.append(
            FeedItem(
                title=" ".join(paragraphs(title, html=title_html)),
                link=_absolute(entry.get("link"), link or base),
                date=_entry_date(entry),
                bodies=tuple(bodies),
            )
        )
    primary, dash, rest = str(channel.get("language") or "").strip().replace("_", "-").partition("-")
    language = primary.lower() + dash + rest
    feed_title, feed_title_html = _detail_text(channel.get("title_detail"), channel.get("title", ""))
    return Feed(
        source=source,
        title=" ".join(paragraphs(feed_title, html=feed_title_html)) or None,
        link=link if link and is_url(link) else None,
        language=language if _LANGUAGE.fullmatch(language) else None,
        items=tuple(items),
        problem=_reason(parsed.get("bozo_exception"))
        if isinstance(parsed.get("bozo_exception"), SAXException)
        else None,
    )


def _reason(error: object) -> str:
    """feedparser's complaint, with the line and column of XML errors instead of "<unknown>:2:48"."""
    if isinstance(error, SAXParseException):
        return f"not well-formed XML at line {error.getLineNumber()}, column {error.getColumnNumber()}: {error.getMessage()}"
    return str(error or "")


def _absolute(link: Any, base: str | None) -> str | None:
    """A relative link read against the feed's own address; feedparser resolves only what xml:base covers."""
    if not link or not isinstance(link, str):
        return None
    text = link.strip()
    return urljoin(base, text) if base else text


class _TextParser(HTMLParser):
    """HTML to paragraphs of plain text: block elements break paragraphs, scripts, styles and images vanish."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[tuple[str, bool]] = []
        self._parts: list[str] = []
        self._dropped = 0
        self._heading = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _DROPPED_TAGS:
            self._dropped += 1
        elif tag == "br":
            self._parts.append("\n")
        elif tag in _BLOCK_TAGS:
            self._flush()
            if tag in _HEADING_TAGS:
                self._heading += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _DROPPED_TAGS:
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in _DROPPED_TAGS:
            self._dropped = max(0, self._dropped - 1)
        elif tag in _BLOCK_TAGS:
            self._flush()
            if tag in _HEADING_TAGS:
                self._heading = max(0, self._heading - 1)

    def handle_data(self, data: str) -> None:
        if not self._dropped:
            self._parts.append(re.sub(r"[\r\n]", " ", data))  # in HTML a line break is a space; <br> breaks lines

    def _flush(self) -> None:
        for text in _split_paragraphs("".join(self._parts)):
            self.blocks.append((text, self._heading > 0))
        self._parts = []

    def close(self) -> None:
        super().close()
        self._flush()


def _split_paragraphs(text: str) -> list[str]:
    """Blank lines separate paragraphs; any other run of white space is one space."""
    chunks = re.split(r"\n[^\S\n]*\n", CONTROL_CHARACTERS.sub("", text.replace("\r\n", "\n").replace("\r", "\n")))
    return [clean for chunk in chunks if (clean := re.sub(r"\s+", " ", chunk).strip())]


def text_blocks(text: str, *, html: bool) -> list[tuple[str, bool]]:
    """(paragraph, is_heading) in order: the plain-text reading of a feed's HTML or text."""
    if not html:
        return [(paragraph, False) for paragraph in _split_paragraphs(text)]
    parser = _TextParser()
    parser.feed(text)
    parser.close()
    return parser.blocks


def paragraphs(text: str, *, html: bool) -> list[str]:
    return [block for block, _ in text_blocks(text, html=html)]
