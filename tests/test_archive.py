"""The public archive: what is listed, the index page, the Atom feed, web versions and the static export."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from lxml import html as lxml_html

from mailer.compose.templates import default_templates_dir
from mailer.errors import MailerError
from mailer.settings import Settings
from mailer.web.archive import MARKER, atom_feed, index_page, publish, scan_archive, web_page
from tests.conftest import ISSUES, MINIMAL, SEED_ISSUES

ATOM = "{http://www.w3.org/2005/Atom}"
TODAY = dt.date(2016, 3, 1)
HOSTILE = """<script>alert("x")</script> & Tom's "Zoë\""""


def issue_text(title: str = "March 2016 Monthly Update", date: str = "2016-03-10") -> str:
    title_yaml = "'" + title.replace("'", "''") + "'"
    return MINIMAL.replace("title: March 2016 Monthly Update", f"title: {title_yaml}").replace(
        "date: 2016-03-10", f"date: {date}"
    )


@pytest.fixture
def issues(tmp_path: Path) -> Path:
    """A copy of the real issues folder, to add to and break."""
    folder = tmp_path / "issues"
    folder.mkdir()
    for slug in SEED_ISSUES:
        shutil.copy(ISSUES / f"{slug}.yaml", folder)
    return folder


def links(html: str) -> list[tuple[str, str]]:
    doc = lxml_html.fromstring(html)
    return [(a.get("href"), a.text_content()) for a in doc.xpath("//main//a")]


def feed_entries(feed: str) -> list[ET.Element]:
    return ET.fromstring(feed.encode("utf-8")).findall(f"{ATOM}entry")


def test_seed_issues_are_listed_newest_first_with_titles_and_links(issues: Path, settings: Settings) -> None:
    scan = scan_archive(issues, settings, today=TODAY)
    assert [(e.slug, e.title, e.date, e.url) for e in scan.entries] == [
        ("2016-02", "February 2016 Monthly Update", dt.date(2016, 2, 10), "https://newsletter.icmpd.org/2016-02/"),
        ("2015-10", "October 2015 Monthly Update", dt.date(2015, 10, 5), "https://newsletter.icmpd.org/2015-10/"),
    ]
    assert scan.entries[0].preheader.startswith("ICMPD’s new Director General in Brussels")
    assert scan.problems == []

    page = index_page(scan.entries, settings)
    assert links(page) == [("2016-02/", "February 2016 Monthly Update"), ("2015-10/", "October 2015 Monthly Update")]
    doc = lxml_html.fromstring(page)
    assert [t.text for t in doc.iter("time")] == ["10 February 2016", "5 October 2015"]
    assert [t.get("datetime") for t in doc.iter("time")] == ["2016-02-10", "2015-10-05"]
    assert "the Budapest Process on the Silk Routes" in doc.xpath("string(//main)")


def test_index_page_is_a_standalone_branded_html5_page(issues: Path, settings: Settings) -> None:
    page = index_page(scan_archive(issues, settings, today=TODAY).entries, settings)
    assert page.startswith("<!DOCTYPE html>")
    doc = lxml_html.fromstring(page)
    assert doc.get("lang") == "en"
    assert doc.findtext(".//title") == "ICMPD newsletter archive"
    assert doc.xpath("//meta[@name='viewport']/@content") == ["width=device-width, initial-scale=1"]
    assert doc.xpath("//link[@rel='alternate'][@type='application/atom+xml']/@href") == ["feed.xml"]
    footer = doc.xpath("string(//footer)")
    assert "International Centre for Migration Policy Development" in footer
    assert "Gonzagagasse 1" in footer and "1010 Vienna, Austria" in footer
    assert doc.xpath("//footer//a/@href")[0] == "https://www.icmpd.org/"
    assert not list(doc.iter("script")) and not doc.xpath("//@src") and not doc.xpath("//link[@rel='stylesheet']")
    assert "@import" not in page and "url(" not in page


def test_an_empty_archive_says_so(tmp_path: Path, settings: Settings) -> None:
    page = index_page(scan_archive(tmp_path, settings).entries, settings)
    assert "No issues have been published yet." in page


def test_future_dated_issue_is_unpublished_until_its_date(issues: Path, settings: Settings) -> None:
    (issues / "2016-03.yaml").write_text(issue_text(date="2016-03-10"), encoding="utf-8")

    scan = scan_archive(issues, settings, today=TODAY)
    assert [e.slug for e in scan.entries] == ["2016-02", "2015-10"]
    assert [e.slug for e in scan.scheduled] == ["2016-03"]
    assert scan.drafts == []
    assert "2016-03/" not in index_page(scan.entries, settings)
    assert len(feed_entries(atom_feed(scan.entries, settings))) == 2
    assert web_page(issues, "2016-03", settings, today=TODAY) is None

    on_the_day = dt.date(2016, 3, 10)
    assert [e.slug for e in scan_archive(issues, settings, today=on_the_day).entries][0] == "2016-03"
    assert "March 2016 Monthly Update" in (web_page(issues, "2016-03", settings, today=on_the_day) or "")


def test_invalid_issue_is_left_out_and_reported_and_the_others_still_listed(issues: Path, settings: Settings) -> None:
    (issues / "2016-01.yaml").write_text(issue_text(date="2016-01-10").replace("title:", "titel:"), encoding="utf-8")
    (issues / "2015-11.yaml").write_bytes(b"title: \xff\xfe\n")
    (issues / "my issue.yaml").write_text(issue_text(date="2016-01-11"), encoding="utf-8")
    (issues / ".#2016-02.yaml").write_text("an editor's lock file", encoding="utf-8")

    scan = scan_archive(issues, settings, today=TODAY)

    assert [e.slug for e in scan.entries] == ["2016-02", "2015-10"]
    assert f"{issues}/2016-01.yaml:1:1: titel: unknown field; did you mean 'title'?" in scan.problems
    assert f"{issues}/2015-11.yaml:1:1: not UTF-8 text; save the file as UTF-8" in scan.problems
    assert any(p.startswith(f"{issues}/my issue.yaml: 'my issue' cannot be a web address") for p in scan.problems)
    assert {p.split(":")[0] for p in scan.problems} == {
        f"{issues}/{name}" for name in ("2016-01.yaml", "2015-11.yaml", "my issue.yaml")
    }
    assert web_page(issues, "2016-01", settings, today=TODAY) is None


def test_a_missing_issues_folder_is_an_error_not_an_empty_archive(tmp_path: Path, settings: Settings) -> None:
    with pytest.raises(MailerError, match="no such folder of issues"):
        scan_archive(tmp_path / "nope", settings)


def test_feed_is_atom_with_one_entry_per_issue(issues: Path, settings: Settings) -> None:
    feed = atom_feed(scan_archive(issues, settings, today=TODAY).entries, settings)
    root = ET.fromstring(feed.encode("utf-8"))

    assert root.tag == f"{ATOM}feed"
    assert root.findtext(f"{ATOM}id") == "https://newsletter.icmpd.org/"
    assert root.findtext(f"{ATOM}title") == "ICMPD newsletter archive"
    assert root.findtext(f"{ATOM}updated") == "2016-02-10T00:00:00Z"
    assert root.findtext(f"{ATOM}author/{ATOM}name") == "ICMPD"
    feed_links = {link.get("rel"): link.get("href") for link in root.findall(f"{ATOM}link")}
    assert feed_links == {"self": "https://newsletter.icmpd.org/feed.xml", "alternate": "https://newsletter.icmpd.org/"}

    entries = root.findall(f"{ATOM}entry")
    assert [
        (
            e.findtext(f"{ATOM}id"),
            e.findtext(f"{ATOM}title"),
            e.findtext(f"{ATOM}updated"),
            e.findall(f"{ATOM}link")[0].get("href"),
        )
        for e in entries
    ] == [
        (
            "https://newsletter.icmpd.org/2016-02/",
            "February 2016 Monthly Update",
            "2016-02-10T00:00:00Z",
            "https://newsletter.icmpd.org/2016-02/",
        ),
        (
            "https://newsletter.icmpd.org/2015-10/",
            "October 2015 Monthly Update",
            "2015-10-05T00:00:00Z",
            "https://newsletter.icmpd.org/2015-10/",
        ),
    ]
    assert (entries[1].findtext(f"{ATOM}summary") or "").startswith("EU Anti-Trafficking Day")


def test_hostile_title_is_escaped_in_index_and_feed(issues: Path, settings: Settings) -> None:
    (issues / "2016-01.yaml").write_text(issue_text(HOSTILE, "2016-01-10"), encoding="utf-8")
    entries = scan_archive(issues, settings, today=TODAY).entries

    page = index_page(entries, settings)
    assert "<script>" not in page
    assert ("2016-01/", HOSTILE) in links(page)
    assert not list(lxml_html.fromstring(page).iter("script"))

    titles = [e.findtext(f"{ATOM}title") for e in feed_entries(atom_feed(entries, settings))]
    assert HOSTILE in titles


def test_web_page_is_the_rendered_web_version(issues: Path, settings: Settings) -> None:
    page = web_page(issues, "2016-02", settings, today=TODAY)
    assert page is not None
    doc = lxml_html.fromstring(page)
    assert doc.findtext(".//title") == "February 2016 Monthly Update"
    assert doc.xpath("//link[@rel='canonical']/@href") == ["https://newsletter.icmpd.org/2016-02/"]
    assert "{{unsubscribe_url}}" not in page
    assert web_page(issues, "2016-02", settings, today=TODAY) is page  # served from the cache, not rendered again
    assert web_page(issues, "2099-01", settings, today=TODAY) is None


def test_web_page_shows_an_edit_on_the_next_request(issues: Path, settings: Settings) -> None:
    path = issues / "2016-01.yaml"
    path.write_text(issue_text("January", "2016-01-10"), encoding="utf-8")
    assert "January" in (web_page(issues, "2016-01", settings, today=TODAY) or "")

    path.write_text(issue_text("January 2016, corrected", "2016-01-10"), encoding="utf-8")
    assert "January 2016, corrected" in (web_page(issues, "2016-01", settings, today=TODAY) or "")


@pytest.mark.parametrize(
    "slug",
    [
        "..",
        ".",
        "../secret",
        "../issues/2016-02",
        "/etc/passwd",
        "2016-02/",
        "2016-02/../2016-02",
        ".hidden",
        "",
        "2016-02\n",
        "%2e%2e",
        "feed.xml",
    ],
)
def test_web_page_refuses_slugs_outside_the_archive(issues: Path, settings: Settings, slug: str) -> None:
    (issues.parent / "secret.yaml").write_text(issue_text(date="2016-01-10"), encoding="utf-8")
    (issues / ".hidden.yaml").write_text(issue_text(date="2016-01-10"), encoding="utf-8")
    assert web_page(issues, slug, settings, today=TODAY) is None


def export_links_resolve(site: Path) -> list[str]:
    """Every relative link of the exported index, followed the way a static web server would."""
    doc = lxml_html.fromstring((site / "index.html").read_text(encoding="utf-8"))
    hrefs = [h for h in doc.xpath("//a/@href | //link/@href") if "://" not in h]
    for href in hrefs:
        target = site / href
        assert (target / "index.html" if href.endswith("/") else target).is_file(), href
    return hrefs


def test_publish_writes_a_static_site_whose_links_resolve(issues: Path, settings: Settings, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()  # an empty folder may be published into

    _, written = publish(issues, site, settings, today=TODAY)

    assert [path for path, _ in written] == [
        site / "index.html",
        site / "feed.xml",
        site / "2016-02" / "index.html",
        site / "2015-10" / "index.html",
    ]
    assert all(path.stat().st_size == size for path, size in written)
    assert sorted(set(export_links_resolve(site))) == ["2015-10/", "2016-02/", "feed.xml"]
    assert (site / "2016-02" / "index.html").read_text(encoding="utf-8") == web_page(
        issues, "2016-02", settings, today=TODAY
    )
    assert len(feed_entries((site / "feed.xml").read_text(encoding="utf-8"))) == 2
    assert (site.stat().st_mode & 0o777) == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == ["issues", "site"]  # no staging folders left behind


def test_a_second_publish_replaces_the_first(issues: Path, settings: Settings, tmp_path: Path) -> None:
    site = tmp_path / "site"
    publish(issues, site, settings, today=TODAY)
    (issues / "2015-10.yaml").unlink()
    (issues / "2016-01.yaml").write_text(issue_text("January", "2016-01-10"), encoding="utf-8")

    publish(issues, site, settings, today=TODAY)

    assert not (site / "2015-10").exists()
    assert (site / "2016-01" / "index.html").is_file()
    assert [href for href, _ in links((site / "index.html").read_text(encoding="utf-8"))] == ["2016-02/", "2016-01/"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["issues", "site"]


def test_publish_refuses_a_folder_it_did_not_make_and_leaves_it_untouched(
    issues: Path, settings: Settings, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.txt").write_text("years of work", encoding="utf-8")

    with pytest.raises(MailerError, match=f"^{home}: not empty and not made by mailer publish \\(no {MARKER} in it\\)"):
        publish(issues, home, settings, today=TODAY)

    assert [p.name for p in home.iterdir()] == ["thesis.txt"]
    assert (home / "thesis.txt").read_text(encoding="utf-8") == "years of work"

    a_file = tmp_path / "site.html"
    a_file.write_text("mine", encoding="utf-8")
    with pytest.raises(MailerError, match="exists and is not a folder"):
        publish(issues, a_file, settings, today=TODAY)
    assert a_file.read_text(encoding="utf-8") == "mine"


def test_a_failed_publish_leaves_the_previous_export_intact(issues: Path, settings: Settings, tmp_path: Path) -> None:
    site = tmp_path / "site"
    publish(issues, site, settings, today=TODAY)
    before = {p.relative_to(site): p.read_bytes() for p in site.rglob("*") if p.is_file()}

    broken = tmp_path / "templates"
    shutil.copytree(default_templates_dir(), broken)
    (broken / "issue.mjml").write_text("{% if %}", encoding="utf-8")
    (issues / "2016-01.yaml").write_text(issue_text("January", "2016-01-10"), encoding="utf-8")

    with pytest.raises(MailerError, match=r"templates/issue.mjml:1: template error: "):
        publish(issues, site, settings.model_copy(update={"templates_dir": broken}), today=TODAY)

    assert {p.relative_to(site): p.read_bytes() for p in site.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["issues", "site", "templates"]


def test_the_published_site_is_readable_by_the_web_servers_user(
    issues: Path, settings: Settings, tmp_path: Path
) -> None:
    previous = os.umask(0o022)
    try:
        _, written = publish(issues, tmp_path / "site", settings, today=TODAY)
    finally:
        os.umask(previous)
    assert {oct(path.stat().st_mode & 0o777) for path, _ in written} == {oct(0o644)}
