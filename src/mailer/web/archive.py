"""The public archive: which issues are published, their index page, Atom feed and web versions, and a static export.

Pure functions over the issues folder: the web app (mailer serve) calls them per request, the
CLI (mailer publish) once. An issue is published when it validates, is not a draft and its date
has come, or as soon as it went out to a list (its emails link to it, whatever its date or
status). A broken file is left out and reported, never breaking the archive.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from markupsafe import Markup

from mailer.compose.build import write_atomically
from mailer.compose.images import PreparedImage
from mailer.compose.issue_images import local_images
from mailer.compose.issues_folder import IssueFile, file_stamp, is_slug, load_cached, scan_issues, slug_of
from mailer.compose.model import Issue, human_date
from mailer.compose.render import IMAGES_FOLDER, RenderedIssue, render_issue
from mailer.compose.templates import default_templates_dir
from mailer.errors import MailerError
from mailer.settings import Settings
from mailer.web.pages import page_templates

MARKER = ".mailer-publish"
"""Written into every export: only a folder holding it may be replaced by the next publish."""
MARKER_TEXT = "Made by mailer publish; the next publish replaces this whole folder.\n"
ATOM = "http://www.w3.org/2005/Atom"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

SentLookup = Callable[[Collection[str]], Collection[str]]
"""Which of these issue names went out to a list (the ledger's answer): public from then on."""

_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_NOT_CSS_FONT = re.compile(r"[^\w\s,'\"-]")


@dataclass(frozen=True)
class ArchiveEntry:
    """One published issue as the index and the feed list it."""

    slug: str
    title: str
    date: dt.date
    preheader: str
    url: str
    path: Path
    language: str = "en"


@dataclass(frozen=True)
class ArchiveScan:
    """What the issues folder holds: published issues newest first, the unpublished ones, and broken files."""

    entries: list[ArchiveEntry]
    drafts: list[ArchiveEntry]
    """`status: draft`, not sent to any list."""
    scheduled: list[ArchiveEntry]
    """Ready but dated later, not sent to any list."""
    problems: list[str]
    broken: list[Path]

    def report(self) -> list[str]:
        """What is left out and why, one line each: what serve logs and publish prints, alike."""
        return [
            *self.problems,
            *(f"{path}: left out of the archive until it is valid (mailer check {path})" for path in self.broken),
            *(f"{entry.path}: status: draft; not published" for entry in self.drafts),
            *(f"{entry.path}: dated {entry.date.isoformat()}; published from that day" for entry in self.scheduled),
        ]


def _not_sent(slugs: Collection[str]) -> Collection[str]:
    return ()


def _entry(path: Path, issue: Issue, settings: Settings) -> ArchiveEntry:
    slug = slug_of(path)
    return ArchiveEntry(
        slug=slug,
        title=issue.title,
        date=issue.date,
        preheader=issue.preheader,
        url=settings.web_url(slug),
        path=path,
        language=issue.language,
    )


def scan_archive(
    folder: Path, settings: Settings, *, today: dt.date | None = None, sent: SentLookup = _not_sent
) -> ArchiveScan:
    """Sort the issue files into published, drafts, scheduled and problems; one broken file never hides the others.

    The ledger is asked only about the unpublished issues, usually none or one.
    """
    today = today or dt.date.today()
    scan = scan_issues(folder, max_bytes=settings.max_issue_bytes)
    hidden = scan.unpublished(today)
    went_out = set(sent([found.slug for found in hidden])) if hidden else set()
    waiting = [found for found in hidden if found.slug not in went_out]

    def entries(found: list[IssueFile]) -> list[ArchiveEntry]:
        return [_entry(item.path, item.issue, settings) for item in found]

    return ArchiveScan(
        entries=entries(scan.public(today, went_out)),
        drafts=entries([found for found in waiting if found.issue.is_draft]),
        scheduled=entries([found for found in waiting if not found.issue.is_draft]),
        problems=scan.problems,
        broken=scan.broken,
    )


class _SettingsIdentity:
    """Compares by identity, so a render cache keyed on it never serves one Settings' output for another."""

    __slots__ = ("settings",)

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def __hash__(self) -> int:
        return id(self.settings)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _SettingsIdentity) and other.settings is self.settings


def _templates_stamp(settings: Settings) -> tuple[int, int]:
    """Newest mtime and count of the email templates, so an edited template is not served stale."""
    newest, count = 0, 0
    for root, _, names in os.walk(settings.templates_dir or default_templates_dir()):
        for name in names:
            stamp = file_stamp(Path(root, name))
            if stamp:
                newest, count = max(newest, stamp[0]), count + 1
    return newest, count


def _render(path: Path, mtime_ns: int, size: int, same: _SettingsIdentity, templates: tuple[int, int]) -> RenderedIssue:
    """A render costs ~40 ms; a busy archive renders each version of an issue, and of its photos, once."""
    loaded = load_cached(path, (mtime_ns, size), max_bytes=same.settings.max_issue_bytes)
    photos = () if isinstance(loaded, tuple) else _photo_stamps(loaded)
    return _render_version(path, mtime_ns, size, same, templates, photos)


def _photo_stamps(issue: Issue) -> tuple[tuple[str, int, int], ...]:
    stamps = []
    for src, file in local_images(issue):
        found = file_stamp(file)
        stamps.append((src, *(found or (0, 0))))
    return tuple(stamps)


@lru_cache(maxsize=32)
def _render_version(
    path: Path,
    mtime_ns: int,
    size: int,
    same: _SettingsIdentity,
    templates: tuple[int, int],
    photos: tuple[tuple[str, int, int], ...],
) -> RenderedIssue:
    loaded = load_cached(path, (mtime_ns, size), max_bytes=same.settings.max_issue_bytes)
    if isinstance(loaded, tuple):
        raise MailerError("\n".join(loaded))
    return render_issue(loaded, slug_of(path), same.settings)


def web_page(
    folder: Path, slug: str, settings: Settings, *, today: dt.date | None = None, sent: SentLookup = _not_sent
) -> str | None:
    """The web version of a published issue; None for anything else (unknown, draft, dated later, broken, bad slug)."""
    rendered = published_render(folder, slug, settings, today=today, sent=sent)
    return rendered.web_html if rendered is not None else None


def web_image(
    folder: Path,
    slug: str,
    name: str,
    settings: Settings,
    *,
    today: dt.date | None = None,
    sent: SentLookup = _not_sent,
) -> PreparedImage | None:
    """One local image of a published issue, by its content-hashed name; None as web_page would say."""
    rendered = published_render(folder, slug, settings, today=today, sent=sent)
    return next((image for image in rendered.images if image.name == name), None) if rendered else None


def published_render(
    folder: Path, slug: str, settings: Settings, *, today: dt.date | None = None, sent: SentLookup = _not_sent
) -> RenderedIssue | None:
    if not is_slug(slug):
        return None
    path = folder / f"{slug}.yaml"
    stamp = file_stamp(path)
    if stamp is None or not path.is_file():
        return None
    loaded = load_cached(path, stamp, max_bytes=settings.max_issue_bytes)
    if isinstance(loaded, tuple):
        return None
    if not IssueFile(path, loaded).public(today or dt.date.today(), ()) and slug not in sent([slug]):
        return None
    return _render(path, *stamp, _SettingsIdentity(settings), _templates_stamp(settings))


def _css_font(font_family: str) -> Markup:
    """The configured font list, safe inside <style>: quotes kept as quotes, nothing that could end the block."""
    return Markup(_NOT_CSS_FONT.sub("", font_family))


def _home(settings: Settings) -> str:
    return settings.archive_url.rstrip("/") + "/"


def archive_title(settings: Settings) -> str:
    return f"{settings.branding.name} newsletter archive"


def index_page(entries: Iterable[ArchiveEntry], settings: Settings) -> str:
    """The archive's front page; its links are relative, so it works served at / and as a static export."""
    return (
        page_templates("archive_page")
        .get_template("index.html")
        .render(
            title=archive_title(settings),
            archive_url=_home(settings),
            branding=settings.branding,
            colours=settings.branding.colours,
            font=_css_font(settings.branding.font_family),
            entries=[
                {
                    "href": f"{entry.slug}/",
                    "title": entry.title,
                    "iso_date": entry.date.isoformat(),
                    "date": human_date(entry.date),
                    "preheader": entry.preheader,
                    "language": entry.language,
                }
                for entry in entries
            ],
        )
    )


def _rfc3339(day: dt.date) -> str:
    return f"{day.isoformat()}T00:00:00Z"


def _add(parent: ET.Element, tag: str, text: str | None = None, **attributes: str) -> ET.Element:
    element = ET.SubElement(parent, tag, {key: _NOT_XML.sub("", value) for key, value in attributes.items()})
    if text is not None:
        element.text = _NOT_XML.sub("", text)
    return element


def atom_feed(entries: Iterable[ArchiveEntry], settings: Settings) -> str:
    """An Atom 1.0 feed with absolute links, so readers can follow it from anywhere."""
    home = _home(settings)
    listed = list(entries)
    updated = max((entry.date for entry in listed), default=None)
    feed = ET.Element("feed", {"xmlns": ATOM})
    _add(feed, "id", home)
    _add(feed, "title", archive_title(settings))
    _add(feed, "updated", _rfc3339(updated) if updated else dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    _add(feed, "link", rel="self", type="application/atom+xml", href=f"{home}feed.xml")
    _add(feed, "link", rel="alternate", type="text/html", href=home)
    author = _add(feed, "author")
    _add(author, "name", settings.branding.name)
    if settings.branding.website:
        _add(author, "uri", settings.branding.website)
    for entry in listed:
        item = _add(feed, "entry", **{XML_LANG: entry.language})
        _add(item, "id", entry.url)
        _add(item, "title", entry.title)
        _add(item, "updated", _rfc3339(entry.date))
        _add(item, "published", _rfc3339(entry.date))
        _add(item, "link", rel="alternate", type="text/html", href=entry.url)
        _add(item, "summary", entry.preheader)
    ET.indent(feed)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(feed, encoding="unicode") + "\n"


def _publish_target(out_dir: Path) -> Path:
    """Where the export goes; refuses anything that is not a previous export, an empty folder or a new name."""
    target = out_dir.resolve() if out_dir.is_symlink() else Path(os.path.abspath(out_dir))
    if not target.name:
        raise MailerError(f"{out_dir}: cannot publish into the root folder; name a folder for the site")
    if target.exists() and not target.is_dir():
        raise MailerError(f"{out_dir}: exists and is not a folder; choose another output folder")
    if target.is_dir() and any(target.iterdir()) and not (target / MARKER).is_file():
        raise MailerError(
            f"{out_dir}: not empty and not made by mailer publish (no {MARKER} in it); "
            "publish into a new or empty folder, nothing was changed"
        )
    return target


def _stage(target: Path, files: dict[str, str | bytes]) -> Path:
    """Write the whole site into a hidden sibling of the target, so the swap is two renames on one file system."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".publishing", dir=target.parent))
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the site from the web server's user
    except OSError as error:
        raise MailerError(
            f"{error.filename or target}: cannot write: {error.strerror}; the previous export is unchanged"
        ) from None
    try:
        write_atomically({staging / name: content for name, content in {MARKER: MARKER_TEXT, **files}.items()})
    except MailerError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def _swap(staging: Path, target: Path) -> None:
    old = staging.with_name(staging.name.removesuffix(".publishing") + ".old")
    moved = False
    try:
        if target.exists():
            os.rename(target, old)
            moved = True
        os.rename(staging, target)
    except OSError as error:
        if moved and not target.exists():
            os.rename(old, target)
        shutil.rmtree(staging, ignore_errors=True)
        raise MailerError(f"{target}: cannot replace the previous export: {error.strerror}; it is unchanged") from None
    if moved:
        shutil.rmtree(old, ignore_errors=True)


def publish(
    folder: Path,
    out_dir: Path,
    settings: Settings,
    *,
    today: dt.date | None = None,
    sent: SentLookup = _not_sent,
    strict: bool = False,
) -> tuple[ArchiveScan, list[tuple[Path, int]]]:
    """Export the archive as static files; everything is rendered first and swapped in whole, or nothing changes.

    A broken issue file is left out (see ArchiveScan.report); with `strict` it stops the publish instead.
    """
    target = _publish_target(out_dir)
    scan = scan_archive(folder, settings, today=today, sent=sent)
    if strict and scan.problems:
        raise MailerError(
            "\n".join([*scan.problems, f"{out_dir}: not published (--strict): fix the issue files above"])
        )
    files: dict[str, str | bytes] = {
        "index.html": index_page(scan.entries, settings),
        "feed.xml": atom_feed(scan.entries, settings),
    }
    templates = _templates_stamp(settings)
    for entry in scan.entries:
        stamp = file_stamp(entry.path)
        if stamp is None:
            raise MailerError(f"{entry.path}: disappeared while publishing; nothing was changed")
        rendered = _render(entry.path, *stamp, _SettingsIdentity(settings), templates)
        files[f"{entry.slug}/index.html"] = rendered.web_html
        for image in rendered.images:
            files[f"{entry.slug}/{IMAGES_FOLDER}/{image.name}"] = image.data
    _publish_target(out_dir)  # again: someone may have written into it while we rendered
    _swap(_stage(target, files), target)
    return scan, [
        (out_dir / name, len(content.encode("utf-8") if isinstance(content, str) else content))
        for name, content in files.items()
    ]
