"""Start an issue from the news feed (mailer draft): each feed item since a day becomes a news story.

The rules, so the draft is the same for everyone (README, "Drafting from the news feed"):

- Source: a file or an http(s) URL, read by mailer.compose.newsfeed.
- Dates: an item's date is its own calendar day as written in the feed (RSS pubDate, Atom
  published, else updated), not converted to UTC. Items on or after `since` are kept, newest
  first; an item without a readable date is left out with a warning, since `since` cannot apply.
  An item repeating an earlier item's link is left out.
- Category: a title is split at its first ": " when the part before it is a label of one to four
  words starting with a capital letter, without digits, and that label is either a known category
  of the organisation's feed (Expert Voice, Project News, Press Release, In Focus; any case, spelled
  the usual way) or starts at least two titles of the same feed. "Migration: a 2019 view" and a
  one-off "Silk Routes: Dialogue as basis for cooperation" stay whole.
- Teaser: the first paragraph of prose (not a heading, ending like a sentence, not the feed's own
  cut-off teaser ending in "...") of the description, else of the full content. Longer than
  300 characters, it ends at the last sentence end before that; a first sentence of up to 450 is
  kept whole; longer, it is cut at a word boundary and ends with "…". No items is an error.
  The feed's HTML is read as plain text (mailer.compose.newsfeed), then the paragraph markup's special
  characters are escaped so it shows exactly as written.
- Link: relative links are resolved against the feed's address; anything that is not then an
  absolute http(s) URL (javascript:, data:...) is dropped with a warning and the title is not linked.
- The issue: dated `today`, titled "<Month YYYY> Monthly Update" after that date (title and date
  never disagree), a preheader counting the stories, the feed's language, and "More news..."
  linking to the feed's site; a comment on top says where and when it was drafted.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ruamel.yaml import YAML
from ruamel.yaml.scalarstring import FoldedScalarString

from mailer.compose.build import write_atomically
from mailer.compose.issues_folder import scan_issues
from mailer.compose.load import parse_issue
from mailer.compose.model import human_date
from mailer.compose.newsfeed import CONTROL_CHARACTERS, Feed, FeedItem, text_blocks
from mailer.compose.placeholders import stray_placeholders
from mailer.errors import MailerError
from mailer.urls import check_absolute_url
from mailer.wording import plural

TEASER_LIMIT = 300
LONG_SENTENCE_LIMIT = 450
"""A first sentence up to this long is kept whole rather than cut mid-way (the 2016 issues' paragraphs run 400-500)."""
FOLD_WIDTH = 88
KNOWN_CATEGORIES = ("Expert Voice", "Project News", "Press Release", "In Focus")
SCHEMA_LINE = "# yaml-language-server: $schema=../schema/issue.schema.json"

_WORD = r"[^\W\d_](?:[^\W\d_]|['’&-])*"
_LABEL = re.compile(rf"{_WORD}(?: (?:{_WORD}|&)){{0,3}}")
_SENTENCE_END = re.compile(r"(?<!\.\.)[.!?][\"'”’»)\]]*(?=\s|$)")
_ENDS_SENTENCE = re.compile(r"[.!?][\"'”’»)\]]*\Z")
_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "prof", "st", "no", "nr", "vs", "e.g", "i.e", "cf", "approx"})
_MARKUP = frozenset("\\*[]`<")


@dataclass(frozen=True)
class Draft:
    """The issue as YAML text, with what the user should know about the items left out or changed."""

    text: str
    stories: int
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class LastIssue:
    path: Path
    date: dt.date
    skipped: tuple[str, ...]


def escape_markup(text: str) -> str:
    """Plain text as paragraph markup that renders exactly that text: no emphasis, links or HTML."""
    out = []
    for index, char in enumerate(text):
        if char in _MARKUP:
            out.append("\\" + char)
        elif char == "_":
            before, after = text[index - 1 : index], text[index + 1 : index + 2]
            out.append("_" if before.isalnum() and after.isalnum() else "\\_")  # intraword _ never emphasises
        else:
            out.append(char)
    return "".join(out)


def _sentence_ends(text: str) -> list[int]:
    ends = []
    for match in _SENTENCE_END.finditer(text):
        word = text[: match.start()].rsplit(" ", 1)[-1].lower()
        if word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()):
            continue
        rest = text[match.end() :].lstrip()
        if rest and rest[0].islower():
            continue
        ends.append(match.end())
    return ends


def shorten(text: str, limit: int = TEASER_LIMIT) -> str:
    """Whole sentences within `limit` characters, or one long first sentence; else whole words and "…"."""
    if len(text) <= limit:
        return text
    ends = _sentence_ends(text)
    within = [end for end in ends if end <= limit]
    if within:
        return text[: within[-1]]
    if ends and ends[0] <= LONG_SENTENCE_LIMIT:
        return text[: ends[0]]
    cut = text.rfind(" ", 0, limit)
    return text[: cut if cut > 0 else limit - 1].rstrip(" ,;:–—-") + "…"


def _is_prose(text: str) -> bool:
    return not text.endswith(("...", "…")) and _ENDS_SENTENCE.search(text) is not None


def teaser(bodies: tuple[tuple[str, bool], ...]) -> str | None:
    """The item's lead paragraph, shortened; the feed's own cut-off teaser only when nothing else is there."""
    fallback = None
    for text, html in bodies:
        for block, heading in text_blocks(text, html=html):
            if heading:
                continue
            if _is_prose(block):
                return shorten(block)
            fallback = fallback or block
    if fallback is None:
        return None
    cut = fallback.rstrip(".… ")
    return cut + "…" if len(cut) < TEASER_LIMIT else shorten(cut)


def _categories(titles: list[str]) -> dict[str, str]:
    """Label (casefolded) -> how it is spelled, for the labels that count as categories in this feed."""
    labels = [label for title in titles if (label := _label(title))]
    counts = Counter(label.casefold() for label in labels)
    spelled: dict[str, str] = {known.casefold(): known for known in KNOWN_CATEGORIES}
    for key, _ in Counter(labels).most_common():
        if counts[key.casefold()] >= 2:
            spelled.setdefault(key.casefold(), key)
    return spelled


def _label(title: str) -> str | None:
    label, sep, rest = title.partition(": ")
    if sep and rest.strip() and _LABEL.fullmatch(label) and label[0].isupper():
        return label
    return None


def _story_url(item: FeedItem, warnings: list[str], source: str) -> str | None:
    if not item.link:
        return None
    try:
        if urlsplit(item.link).scheme in ("http", "https"):
            return check_absolute_url(item.link)
    except ValueError:
        pass
    warnings.append(f"{source}: item {item.title!r}: link {item.link!r} is not an http(s) URL; the title is not linked")
    return None


def draft_issue(feed: Feed, since: dt.date, *, today: dt.date) -> Draft:
    """The items dated on or after `since` as a valid issue file, newest first; no items is an error."""
    if not feed.items:
        raise MailerError(f"{feed.source}: the feed has no items; nothing to draft")
    warnings = [f"{feed.source}: {feed.problem}; drafted from what could be read"] if feed.problem else []
    kept: list[FeedItem] = []
    seen: set[str] = set()
    for item in feed.items:
        name = repr(item.title) if item.title else f"with link {item.link!r}"
        if item.date is None:
            warnings.append(f"{feed.source}: item {name} has no date; left out, as --since cannot apply to it")
        elif not item.title:
            if item.date >= since:
                warnings.append(f"{feed.source}: item {name} has no title; left out")
        elif item.date >= since and not (item.link and item.link in seen):
            kept.append(item)
            if item.link:
                seen.add(item.link)
    if not kept:
        dated = [item.date for item in feed.items if item.date]
        newest = f" (the newest is from {human_date(max(dated))})" if dated else ""
        message = f"{feed.source}: no items dated {since.isoformat()} or later{newest}; nothing to draft"
        raise MailerError("\n".join([*warnings, message]))
    kept.sort(key=lambda item: item.date or since, reverse=True)
    categories = _categories([item.title for item in feed.items])
    stories = []
    for item in kept:
        story: dict[str, Any] = {}
        title = item.title
        label = _label(title)
        where = f"{feed.source}: item {item.title!r}"
        if label and label.casefold() in categories:
            story["category"] = _defused(categories[label.casefold()], warnings, where)
            title = title.partition(": ")[2].strip()
        story["title"] = _defused(title, warnings, where)
        url = _story_url(item, warnings, feed.source)
        if url:
            story["url"] = url
        story["date"] = item.date
        lead = teaser(item.bodies)
        if lead:
            text = escape_markup(_defused(lead, warnings, where))
            story["paragraphs"] = [_folded(text)]
        stories.append(story)
    count = plural(len(stories), "news item")
    issue: dict[str, Any] = {"title": f"{today:%B %Y} Monthly Update", "date": today, "status": "draft"}
    if feed.language:
        issue["language"] = feed.language
    issue["preheader"] = f"{count} since {human_date(since)}"
    news: dict[str, Any] = {"stories": stories}
    if feed.link:
        news["more"] = {"label": "More news...", "url": feed.link}
    issue["news"] = news
    text = _header(feed.source, since, today, count) + _dump(issue)
    parse_issue(text, "the draft")  # a draft that would not validate is a bug here, never a file to fix by hand
    return Draft(text=text, stories=len(stories), warnings=tuple(warnings))


def _defused(text: str, warnings: list[str], where: str) -> str:
    """Feed text that would read as a placeholder (an error outside greeting) with its braces as parentheses."""
    slips = stray_placeholders(text)
    if not slips:
        return text
    written = text.replace("{", "(").replace("}", ")")
    first = slips[0].message.split(" looks like", 1)[0]
    warnings.append(f"{where}: {first} would read as a placeholder; written with parentheses, check it")
    return written


def _header(source: str, since: dt.date, today: dt.date, count: str) -> str:
    where = re.sub(r"\s+", " ", CONTROL_CHARACTERS.sub("", source))
    return (
        f"{SCHEMA_LINE}\n"
        f"# Drafted by `mailer draft` on {today.isoformat()} from {where}:\n"
        f"# {count} dated {since.isoformat()} or later. Check each story, then write the preheader.\n"
        "# status: draft keeps it off the archive and out of list sends; set status: ready when it is.\n"
    )


def _folded(text: str) -> str:
    """A long paragraph as `>-` wrapped at FOLD_WIDTH, the way the issue files are written by hand."""
    if len(text) <= FOLD_WIDTH:
        return text
    folds: list[int] = []
    line_start, last_space = 0, -1
    for index, char in enumerate(text + " "):
        if char != " ":
            continue
        if index - line_start > FOLD_WIDTH and last_space > line_start:
            folds.append(last_space)
            line_start = last_space + 1
        last_space = index
    folded: FoldedScalarString = FoldedScalarString(text)
    folded.fold_pos = folds  # type: ignore[attr-defined]  # declared in __slots__ only
    return folded


def _dump(data: dict[str, Any]) -> str:
    yaml = YAML()
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096  # titles and URLs on one line; paragraphs are folded by _folded
    yaml.allow_unicode = True
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def last_issue(folder: Path) -> LastIssue:
    """The newest valid ready issue in the folder: the next draft starts at its date (--since last-issue).

    Drafts do not count: a draft started yesterday must not move the next one's start.
    """
    scan = scan_issues(folder)
    if not scan.ready:
        raise MailerError(f"{folder}: no valid ready issue files to take the date from; give --since YYYY-MM-DD")
    newest = scan.ready[0]
    skipped = tuple(f"{path}: not a valid issue; its date is not used for --since last-issue" for path in scan.broken)
    return LastIssue(path=newest.path, date=newest.issue.date, skipped=skipped)


def check_writable(path: Path, *, force: bool) -> None:
    """Refuse before any work is done: an existing issue file is replaced only with --force."""
    if path.is_dir():
        raise MailerError(f"{path}: is a directory; name the issue file to write, e.g. issues/2019-08.yaml")
    if not path.parent.is_dir():
        raise MailerError(f"{path.parent}: no such folder")
    if path.exists() and not force:
        raise MailerError(f"{path}: already exists; pass --force to replace it")


def write_draft(path: Path, text: str, *, force: bool) -> None:
    """The file is whole or untouched: build.py's atomic write, after the --force check."""
    check_writable(path, force=force)
    write_atomically({path: text})
