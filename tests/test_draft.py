"""`mailer draft`: the organisation's news feed (RSS) and an Atom feed become issue files that check and render.

The CLI runs in process (click's CliRunner: the same output and exit codes, no interpreter start per
call) in a temp copy of a content repository; feed URLs are served by a real HTTP server on 127.0.0.1
started here.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import http.server
import json
import re
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import lxml.html
import pytest
from click.testing import CliRunner
from markdown_it.common.utils import escapeHtml
from ruamel.yaml import YAML

from mailer.cli import cli
from mailer.compose.draft import KNOWN_CATEGORIES, draft_issue, escape_markup, shorten, teaser
from mailer.compose.load import load_issue, parse_issue
from mailer.compose.markup import markup_to_html, markup_to_text
from mailer.compose.model import Issue, Story
from mailer.compose.newsfeed import Feed, FeedItem, read_feed, text_blocks
from tests.conftest import MINIMAL, ROOT
from tests.smtp_server import free_port

FEEDS = Path(__file__).parent / "feeds"
NEWS_CENTRE = FEEDS / "news-centre-2019-08.xml"
ATOM = FEEDS / "news.atom"
SCHEMA_LINE = "# yaml-language-server: $schema=../schema/issue.schema.json"
SENTENCE_END = re.compile(r"[.!?][\"'”’)]*$")


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


def mailer(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Ran:
    """`mailer ARGS` run in `cwd`, in this process; a bug's exception is raised here rather than hidden in an exit code."""
    runner = CliRunner(env={"NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1", **(env or {})})
    with contextlib.chdir(cwd):
        result = runner.invoke(cli, list(args), prog_name="mailer")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Ran(result.exit_code, result.stdout, result.stderr)


def stories(issue: Issue) -> list[Story]:
    assert issue.news is not None
    return issue.news.stories


def rss(items: str, *, channel: str = "<title>Test news</title><link>https://news.example.org/</link>") -> str:
    return f'<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>{channel}{items}</channel></rss>\n'


def rss_item(
    title: str, *, date: str | None = "Tue, 16 Jul 2019 15:32:30 +0200", link: str = "", body: str = ""
) -> str:
    parts = [f"<title>{title}</title>"]
    if link:
        parts.append(f"<link>{link}</link>")
    if body:
        parts.append(f"<description><![CDATA[{body}]]></description>")
    if date:
        parts.append(f"<pubDate>{date}</pubDate>")
    return f"<item>{''.join(parts)}</item>"


@dataclass(frozen=True)
class SourceItem:
    title: str
    link: str
    date: dt.date
    paragraphs: list[str]


def news_centre_items() -> list[SourceItem]:
    """What the fixture says, read independently of feedparser: title, link, date and body paragraphs."""
    items = []
    for item in ET.parse(NEWS_CENTRE).getroot().iter("item"):
        body = item.findtext("{http://purl.org/rss/1.0/modules/content/}encoded") or ""
        blocks = lxml.html.fragment_fromstring(body, create_parent="div").iter("p", "li")
        bare = body.split("<", 1)[0]  # two items start with text outside any <p>
        items.append(
            SourceItem(
                title=item.findtext("title") or "",
                link=item.findtext("link") or "",
                date=email.utils.parsedate_to_datetime(item.findtext("pubDate") or "").date(),
                paragraphs=[p for text in [bare, *(b.text_content() for b in blocks)] if (p := " ".join(text.split()))],
            )
        )
    return items


# --- the organisation's feed, end to end ------------------------------------------------------


def test_the_news_centre_feed_drafts_an_issue_that_checks_and_renders(workdir: Path) -> None:
    before = dt.date.today()
    result = mailer(
        "draft", "--feed", str(NEWS_CENTRE), "--since", "2019-07-01", "-o", "issues/2019-08.yaml", cwd=workdir
    )
    after = dt.date.today()
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert (
        result.stdout == "wrote issues/2019-08.yaml: 10 news stories; check it with: mailer check issues/2019-08.yaml\n"
    )

    text = (workdir / "issues" / "2019-08.yaml").read_text(encoding="utf-8")
    issue = load_issue(workdir / "issues" / "2019-08.yaml")
    today = issue.date  # the day the draft ran, read once, so a run across midnight compares against itself
    assert before <= today <= after
    assert text.splitlines()[:3] == [
        SCHEMA_LINE,
        f"# Drafted by `mailer draft` on {today.isoformat()} from {NEWS_CENTRE}:",
        "# 10 news items dated 2019-07-01 or later. Check each story, then write the preheader.",
    ]
    assert (issue.title, issue.language) == (f"{today:%B %Y} Monthly Update", "en")
    assert issue.preheader == "10 news items since 1 July 2019"
    assert issue.news is not None and issue.news.more is not None
    assert (issue.news.more.label, issue.news.more.url) == ("More news...", "https://www.icmpd.org/")

    expected = news_centre_items()
    assert len(expected) == 10
    drafted = stories(issue)
    assert [(s.category, s.title, s.url, s.date) for s in drafted] == [
        ({"Expert voice": "Expert Voice"}.get(category, category), title, item.link, item.date)
        for item in expected
        for category, title in [item.title.split(": ", 1)]
    ]
    assert {s.category for s in drafted} == {"Project News", "Expert Voice"}
    assert drafted[1].title == (
        "Needing to use migrant smuggling services as a position of vulnerability: Trafficking on migration routes to Europe"
    )
    assert [s.date for s in drafted] == sorted((s.date for s in drafted), key=lambda d: d or today, reverse=True)

    for story, item in zip(drafted, expected, strict=True):
        assert len(story.paragraphs) == 1, story.title
        lead = markup_to_text(story.paragraphs[0])
        assert SENTENCE_END.search(lead), lead
        assert len(lead) <= 450, lead
        assert len(lead) <= 300 or len(re.findall(r"[.!?][”’\"']* [A-Z“‘]", lead)) == 0, lead  # longer: one sentence
        source = next(p for p in item.paragraphs if p.startswith(lead))  # the lead of the body, cut between sentences
        assert source == lead or source[len(lead)] == " ", lead
    assert (
        drafted[1]
        .paragraphs[0]
        .startswith("Faizan\\* was 14 years old when he arrived in Serbia in 2016 from Pakistan.")
    )
    assert drafted[4].paragraphs[0] == (  # "Mr." or a ")" is no sentence end; the whole first paragraph fits
        "The meeting, held under the co-chairmanship of the Kingdom of Spain and the Kingdom of Morocco, gathered "
        "80 participants representing 33 partner countries of the Dialogue (of which 13 were European and 20 were "
        "African countries), the EU Delegation and ICMPD experts."
    )

    assert mailer("check", "issues/2019-08.yaml", cwd=workdir).stdout == "1 issue file OK\n"
    schema = json.loads((ROOT / "schema" / "issue.schema.json").read_text(encoding="utf-8"))
    jsonschema.validate(json.loads(json.dumps(YAML(typ="safe").load(text), default=str)), schema)  # editors agree
    rendered = mailer("render", "issues/2019-08.yaml", cwd=workdir)
    assert rendered.returncode == 0, rendered.stderr
    html = (workdir / "build" / "2019-08" / "email.html").read_text(encoding="utf-8")
    page = lxml.html.fromstring(html)
    for item in expected:
        assert page.xpath("//a[@href=$url]", url=item.link), item.link
    assert "Faizan* was 14 years old" in page.text_content()
    assert "Faizan* was 14 years old" in (workdir / "build" / "2019-08" / "email.txt").read_text(encoding="utf-8")


def test_since_keeps_the_items_of_that_day_and_later_newest_first(workdir: Path) -> None:
    result = mailer("draft", "--feed", str(NEWS_CENTRE), "--since", "2019-07-16", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(SCHEMA_LINE + "\n")
    issue = parse_issue(result.stdout, "stdout")
    assert [s.date for s in stories(issue)] == [
        dt.date(2019, 8, 16),
        dt.date(2019, 7, 30),
        dt.date(2019, 7, 25),
        dt.date(2019, 7, 25),
        dt.date(2019, 7, 16),
    ]
    assert issue.preheader == "5 news items since 16 July 2019"
    assert not (workdir / "build").exists() and sorted(p.name for p in (workdir / "issues").iterdir()) == [
        "2015-10.yaml",
        "2016-02.yaml",
    ]


def test_since_last_issue_starts_at_the_newest_valid_issue_in_issues_dir(workdir: Path) -> None:
    content = workdir / "content"
    content.mkdir()
    (content / "2019-07.yaml").write_text(MINIMAL.replace("2016-03-10", "2019-07-25"), encoding="utf-8")
    (content / "2019-06.yaml").write_text(MINIMAL.replace("2016-03-10", "2019-06-20"), encoding="utf-8")
    (content / "zz-broken.yaml").write_text(MINIMAL.replace("2016-03-10", "2019-12-31").replace("title:", "titel:"))
    result = mailer(
        "draft", "--feed", str(NEWS_CENTRE), "--since", "last-issue", cwd=workdir, env={"MAILER_ISSUES_DIR": "content"}
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        "content/zz-broken.yaml: not a valid issue; its date is not used for --since last-issue\n"
        "since 2019-07-25, the date of content/2019-07.yaml\n"
    )
    issue = parse_issue(result.stdout, "stdout")
    assert [s.date for s in stories(issue)] == [dt.date(2019, 8, 16), dt.date(2019, 7, 30), *[dt.date(2019, 7, 25)] * 2]
    assert issue.preheader == "4 news items since 25 July 2019"

    result = mailer("draft", "--feed", str(NEWS_CENTRE), "--since", "last-issue", cwd=workdir)  # issues/: 2016-02-10
    assert result.stderr == "since 2016-02-10, the date of issues/2016-02.yaml\n"
    assert len(stories(parse_issue(result.stdout, "stdout"))) == 10


@pytest.mark.parametrize("since", ["yesterday", "2019-02-30", "20190701", "2019-7-1"])
def test_since_is_a_day_or_last_issue(workdir: Path, since: str) -> None:
    result = mailer("draft", "--feed", str(NEWS_CENTRE), "--since", since, cwd=workdir)
    assert (result.returncode, result.stdout) == (2, "")
    assert (
        f"Invalid value for '--since': {since!r} is neither a day as YYYY-MM-DD (e.g. 2019-07-01) nor last-issue"
        in result.stderr
    )


def test_an_atom_feed_drafts_too(workdir: Path) -> None:
    result = mailer("draft", "--feed", str(ATOM), "--since", "2016-01-01", "-o", "issues/atom.yaml", cwd=workdir)
    assert result.returncode == 0, result.stderr
    issue = load_issue(workdir / "issues" / "atom.yaml")
    assert [(s.category, s.title, s.url, s.date) for s in stories(issue)] == [
        (
            "Project News",
            "ICMPD Summer School 2019 took place in Kachreti, Georgia",
            "https://www.icmpd.org/news-centre/news-detail/project-news-icmpd-summer-school-2019-took-place-in-kachreti-georgia/",
            dt.date(2019, 7, 10),  # no <published>: <updated>
        ),
        (
            "Project News",
            "Sfax Municipality hosts MC2CM event in urban migration governance",
            "https://www.icmpd.org/news-centre/news-detail/project-news-sfax-municipality-hosts-mc2cm-event-in-urban-migration-governance/",
            dt.date(2019, 7, 3),
        ),
        (
            None,
            "Silk Routes: Dialogue as basis for cooperation",
            "https://www.icmpd.org/news-centre/blog/budapest-process-in-practice/",
            dt.date(2016, 2, 10),
        ),
    ]
    assert [s.paragraphs for s in stories(issue)] == [
        [  # xhtml content; the heading is skipped
            "Funded by the European Union, this summer school targeted young professionals, government employees, "
            "students and civil society representatives."
        ],
        [  # the summary is the feed's own cut-off teaser; the content's lead is used
            "Hosted by the Municipality of Sfax, Tunisia, the event convened more than 60 participants representing "
            "17 cities of the Euro-Mediterranean region, 4 networks of cities, 10 civil society organisations, as well "
            "as local and international experts."
        ],
        [
            "‘Regional consultative processes’ or ‘migration dialogues’ are an important cooperation tool between "
            "countries. Through these fora, states can have formal and informal discussions from expert to "
            "ministerial level."
        ],
    ]
    assert issue.news is not None and issue.news.more is not None
    assert issue.news.more.url == "https://www.icmpd.org/news-centre/"
    assert mailer("check", "issues/atom.yaml", cwd=workdir).returncode == 0
    assert mailer("render", "issues/atom.yaml", cwd=workdir).returncode == 0

    later = mailer("draft", "--feed", str(ATOM), "--since", "2019-07-05", cwd=workdir)
    assert [s.title for s in stories(parse_issue(later.stdout, "stdout"))] == [
        "ICMPD Summer School 2019 took place in Kachreti, Georgia"
    ]


# --- writing ------------------------------------------------------------------------------------


def test_an_existing_file_is_replaced_only_with_force(workdir: Path) -> None:
    target = workdir / "issues" / "2019-08.yaml"
    target.write_text("# an editor's work in progress\n", encoding="utf-8")
    args = ("draft", "--feed", str(NEWS_CENTRE), "--since", "2019-07-01", "-o", "issues/2019-08.yaml")
    refused = mailer(*args, cwd=workdir)
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == "issues/2019-08.yaml: already exists; pass --force to replace it\n"
    assert target.read_text(encoding="utf-8") == "# an editor's work in progress\n"

    replaced = mailer(*args, "--force", cwd=workdir)
    assert replaced.returncode == 0, replaced.stderr
    assert len(stories(load_issue(target))) == 10
    assert sorted(p.name for p in (workdir / "issues").iterdir()) == ["2015-10.yaml", "2016-02.yaml", "2019-08.yaml"]


def test_the_output_folder_must_exist(workdir: Path) -> None:
    result = mailer("draft", "--feed", str(NEWS_CENTRE), "--since", "2019-07-01", "-o", "drafts/x.yaml", cwd=workdir)
    assert (result.returncode, result.stderr) == (1, "drafts: no such folder\n")


# --- bad feeds ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("this is not a feed, just words\n", "not an RSS or Atom feed ("),
        (
            "<!DOCTYPE html><html><head><title>News</title></head><body><h1>News</h1><p>Moved.</body></html>\n",
            "not an RSS or Atom feed (",
        ),
    ],
)
def test_a_document_that_is_not_a_feed_is_one_line(workdir: Path, content: str, reason: str) -> None:
    (workdir / "news.xml").write_text(content, encoding="utf-8")
    result = mailer("draft", "--feed", "news.xml", "--since", "2019-07-01", cwd=workdir)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith(f"news.xml: {reason}") and result.stderr.count("\n") == 1, result.stderr


def test_a_missing_feed_file_or_a_folder_is_one_line(workdir: Path) -> None:
    missing = mailer("draft", "--feed", "missing.xml", "--since", "2019-07-01", cwd=workdir)
    assert (missing.returncode, missing.stderr) == (1, "missing.xml: no such file\n")
    folder = mailer("draft", "--feed", "issues", "--since", "2019-07-01", cwd=workdir)
    assert (folder.returncode, folder.stderr) == (1, "issues: is a directory, not a feed\n")
    ftp = mailer("draft", "--feed", "ftp://127.0.0.1/news.xml", "--since", "2019-07-01", cwd=workdir)
    assert (ftp.returncode, ftp.stderr) == (
        1,
        "ftp://127.0.0.1/news.xml: only http(s) URLs and local files can be read\n",
    )


def test_a_feed_without_items_or_without_new_items_drafts_nothing(workdir: Path) -> None:
    (workdir / "empty.xml").write_text(rss(""), encoding="utf-8")
    empty = mailer("draft", "--feed", "empty.xml", "--since", "2019-07-01", "-o", "issues/x.yaml", cwd=workdir)
    assert (empty.returncode, empty.stdout) == (1, "")
    assert empty.stderr == "empty.xml: the feed has no items; nothing to draft\n"

    old = mailer("draft", "--feed", str(NEWS_CENTRE), "--since", "2019-08-17", "-o", "issues/x.yaml", cwd=workdir)
    assert old.returncode == 1
    assert old.stderr == (
        f"{NEWS_CENTRE}: no items dated 2019-08-17 or later (the newest is from 16 August 2019); nothing to draft\n"
    )
    assert not (workdir / "issues" / "x.yaml").exists()


def test_items_without_a_date_are_left_out_with_a_warning(workdir: Path) -> None:
    items = rss_item("Project News: Dated", link="https://news.example.org/dated/", body="<p>It happened.</p>")
    items += rss_item("Undated news", date=None, link="https://news.example.org/undated/")
    items += rss_item("Badly dated news", date="sometime in July", link="https://news.example.org/badly/")
    (workdir / "news.xml").write_text(rss(items), encoding="utf-8")
    result = mailer("draft", "--feed", "news.xml", "--since", "2019-07-01", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        "news.xml: item 'Undated news' has no date; left out, as --since cannot apply to it\n"
        "news.xml: item 'Badly dated news' has no date; left out, as --since cannot apply to it\n"
    )
    assert [(s.category, s.title, s.paragraphs) for s in stories(parse_issue(result.stdout, "stdout"))] == [
        ("Project News", "Dated", ["It happened."])
    ]


def test_hostile_html_in_a_feed_never_reaches_the_email_as_markup(workdir: Path) -> None:
    body = (
        "<p>Before <script>alert(1)</script><style>p { display: none }</style>"
        '<img src="x" onerror="alert(2)"><a href="javascript:alert(3)">click</a> **not bold** and '
        "[x](javascript:alert(4)) and [y](https://evil.example/) _under_ `code` &lt;b&gt;tag&lt;/b&gt; "
        "<iframe src='https://evil.example/'>fallback</iframe> back\\slash end.</p>"
    )
    items = rss_item(
        "In Focus: <b>Bold</b> &lt;script&gt;alert(5)&lt;/script&gt;Borders", link="javascript:alert(6)", body=body
    )
    items += rss_item("Project News: Relative", link="/news/relative/", body="<p>Fine.</p>")
    (workdir / "news.xml").write_text(rss(items), encoding="utf-8")

    result = mailer("draft", "--feed", "news.xml", "--since", "2019-07-01", "-o", "issues/hostile.yaml", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        "news.xml: item 'In Focus: Bold <script>alert(5)</script>Borders': link 'javascript:alert(6)' is not an "
        "http(s) URL; the title is not linked\n"
    )
    hostile, relative = stories(load_issue(workdir / "issues" / "hostile.yaml"))
    title = "Bold <script>alert(5)</script>Borders"  # the feed's escaped text, shown as text
    assert (hostile.category, hostile.title, hostile.url) == ("In Focus", title, None)
    assert relative.url == "https://news.example.org/news/relative/"
    shown = "Before click **not bold** and [x](javascript:alert(4)) and [y](https://evil.example/) _under_ `code` <b>tag</b> fallback back\\slash end."
    assert markup_to_text(hostile.paragraphs[0]) == shown

    rendered = mailer("render", "issues/hostile.yaml", cwd=workdir)
    assert rendered.returncode == 0, rendered.stderr
    html = (workdir / "build" / "hostile" / "email.html").read_text(encoding="utf-8")
    page = lxml.html.fromstring(html)
    assert not page.xpath("//script | //iframe | //object | //embed")
    for element in page.iter():
        for name, value in element.attrib.items():
            assert not name.lower().startswith("on"), (element.tag, name)
            assert not value.strip().lower().startswith(("javascript:", "data:")), (element.tag, name, value)
    for needle in ("alert(1)", "alert(2)", "alert(3)", "alert(6)", "display: none"):
        assert needle not in html, needle
    assert [h.text_content() for h in page.iter("h3") if "Borders" in h.text_content()] == [title]
    (paragraph,) = [p for p in page.iter("p") if (p.text_content() or "").startswith("Before click")]
    assert paragraph.text_content() == shown
    assert len(paragraph) == 0, "no <strong>, <em>, <a> or <b> made from the feed's text"
    assert "https://evil.example/" not in [a.get("href") for a in page.iter("a")]
    assert shown in " ".join((workdir / "build" / "hostile" / "email.txt").read_text(encoding="utf-8").split())


# --- URLs, over real HTTP on 127.0.0.1 ----------------------------------------------------------------


class _FeedHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        path = self.path.split("?")[0]
        if path == "/news.xml":
            self._send(200, NEWS_CENTRE.read_bytes(), "application/rss+xml; charset=utf-8")
        elif path == "/page.html":
            self._send(
                200, b"<!DOCTYPE html><html><head><title>ICMPD</title></head><body><p>Hi</p></body></html>", "text/html"
            )
        elif path == "/slow.xml":  # answers only when the test is over, long after any --timeout it uses
            assert isinstance(self.server, _Server)
            self.server.release.wait(timeout=30)
            self._send(200, NEWS_CENTRE.read_bytes(), "application/rss+xml")
        elif path == "/to-ftp.xml":
            self.send_response(302)
            self.send_header("Location", "ftp://127.0.0.1/news.xml")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/moved.xml":
            self.send_response(301)
            self.send_header("Location", "/news.xml")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._send(404, b"not here", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the tests read the CLI's output, not the server's."""


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    release = threading.Event()


@pytest.fixture
def feed_server() -> Iterator[str]:
    server = _Server(("127.0.0.1", 0), _FeedHandler)
    server.release = threading.Event()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()


def test_a_feed_url_is_fetched_and_drafted(workdir: Path, feed_server: str) -> None:
    result = mailer("draft", "--feed", f"{feed_server}/moved.xml", "--since", "2019-07-01", cwd=workdir)
    assert (result.returncode, result.stderr) == (0, "")
    assert f"from {feed_server}/moved.xml:" in result.stdout.splitlines()[1]
    assert len(stories(parse_issue(result.stdout, "stdout"))) == 10

    secret = mailer(
        "draft",
        "--feed",
        feed_server.replace("//", "//editor:s3cret@") + "/news.xml",
        "--since",
        "2019-07-01",
        cwd=workdir,
    )
    assert (secret.returncode, secret.stdout) == (1, "")
    assert secret.stderr == f"{feed_server}/news.xml: user names and passwords in feed URLs are not supported\n"


def test_feed_url_failures_are_one_line_each(workdir: Path, feed_server: str) -> None:
    def draft(url: str, *extra: str) -> tuple[int, str]:
        result = mailer("draft", "--feed", url, "--since", "2019-07-01", *extra, cwd=workdir)
        assert result.stdout == "" and "Traceback" not in result.stderr
        return result.returncode, result.stderr

    assert draft(f"{feed_server}/gone.xml") == (
        1,
        f"{feed_server}/gone.xml: the server answered 404 Not Found, not the feed\n",
    )
    code, message = draft(f"{feed_server}/page.html")
    assert (
        code == 1
        and message.startswith(f"{feed_server}/page.html: not an RSS or Atom feed (")
        and message.count("\n") == 1
    )
    assert draft(f"{feed_server}/slow.xml", "--timeout", "0.2") == (
        1,
        f"{feed_server}/slow.xml: no answer within 0.2 s; try again later or raise --timeout\n",
    )
    assert draft(f"{feed_server}/to-ftp.xml") == (
        1,
        f"{feed_server}/to-ftp.xml: redirects to 'ftp://127.0.0.1/news.xml', which is not an http(s) URL\n",
    )
    closed = f"http://127.0.0.1:{free_port()}/news.xml"
    assert draft(closed) == (1, f"{closed}: cannot connect: Connection refused\n")


# --- the rules, as pure functions ---------------------------------------------------------------------


def item(title: str, day: dt.date, *bodies: tuple[str, bool], link: str | None = None) -> FeedItem:
    return FeedItem(title=title, link=link, date=day, bodies=tuple(bodies))


def feed(*items: FeedItem) -> Feed:
    return Feed(source="news.xml", title="News", link="https://news.example.org/", language="en", items=items)


def test_category_prefixes_are_split_only_when_they_look_like_categories() -> None:
    day = dt.date(2019, 7, 20)
    drafted = draft_issue(
        feed(
            item("Expert voice: Lower-case kicker", day),
            item("PRESS RELEASE: Shouting", day),
            item("Migration: a 2019 view", day),
            item("Silk Routes: Dialogue as basis for cooperation", day),
            item("Policy Brief: One", day),
            item("Policy brief: Two", day),
            item("Policy Brief: Three", day),
            item("The 2019 Summit: Outcomes", day),
            item("In Focus: Borders: old and new", day),
            item("A very long label of words: Not a category", day),
            item("Project News:", day),
        ),
        dt.date(2019, 7, 1),
        today=dt.date(2019, 8, 2),
    )
    issue = parse_issue(drafted.text, "draft")
    assert [(s.category, s.title) for s in stories(issue)] == [
        ("Expert Voice", "Lower-case kicker"),
        ("Press Release", "Shouting"),
        (None, "Migration: a 2019 view"),
        (None, "Silk Routes: Dialogue as basis for cooperation"),
        ("Policy Brief", "One"),
        ("Policy Brief", "Two"),
        ("Policy Brief", "Three"),
        (None, "The 2019 Summit: Outcomes"),
        ("In Focus", "Borders: old and new"),
        (None, "A very long label of words: Not a category"),
        (None, "Project News:"),
    ]
    assert (issue.title, issue.date, issue.preheader) == (
        "August 2019 Monthly Update",
        dt.date(2019, 8, 2),
        "11 news items since 1 July 2019",
    )
    assert KNOWN_CATEGORIES == ("Expert Voice", "Project News", "Press Release", "In Focus")


def test_a_teaser_ends_at_a_sentence_and_stays_short() -> None:
    sentence = "Mr. Oleg Chirita, Head of Programme at ICMPD, opened the meeting in St. Petersburg on 3 July."
    assert shorten(" ".join([sentence] * 2)) == " ".join([sentence] * 2)
    assert shorten(" ".join([sentence] * 5)) == " ".join([sentence] * 3)  # 3 × 95 characters: the last end before 300
    one_long = "A " + "very " * 80 + "long sentence. And more."
    assert shorten(one_long) == "A " + "very " * 80 + "long sentence."  # 417: kept whole rather than cut
    endless = "word " * 200
    assert shorten(endless).endswith("word…") and len(shorten(endless)) <= 300
    assert teaser(
        (("A cut-off teaser of the feed...", False), ("<h2>Heading</h2><p>By Ana</p><p>The lead.</p>", True))
    ) == ("The lead.")
    assert teaser((("Only the cut-off teaser...", False),)) == "Only the cut-off teaser…"
    assert teaser((("", True),)) is None


def test_html_becomes_paragraphs_of_plain_text() -> None:
    html = (
        "Bare text<p>a &amp; b&nbsp;c &#8211; d</p><script>var x = '<p>no</p>';</script>"
        "<div>line<br>break<br><br>new paragraph</div><h2>Heading</h2><ul><li>one</li><li>two</li></ul>"
        "<style>.x{}</style><!-- a comment --><p>in<b>line</b> <a href='https://x.example/'>link</a></p>"
    )
    assert text_blocks(html, html=True) == [
        ("Bare text", False),
        ("a & b c – d", False),
        ("line break", False),
        ("new paragraph", False),
        ("Heading", True),
        ("one", False),
        ("two", False),
        ("inline link", False),
    ]
    assert text_blocks("one\n\n  two\nlines\x07 ", html=False) == [("one", False), ("two lines", False)]


@pytest.mark.parametrize(
    "text",
    [
        "**not bold** *nor this* _nor_ __that__",
        "[x](javascript:alert(1)) [y](https://evil.example/) ![i](https://evil.example/i.png)",
        "<b>tag</b> <script>alert(1)</script> &amp; &lt;",
        "back\\slash \\*escaped\\* `code` snake_case_name _x_ a_ _b",
        "IBM_Silk_Routes@icmpd.org 50% *",
    ],
)
def test_escaped_text_renders_exactly_as_written(text: str) -> None:
    escaped = escape_markup(text)
    assert markup_to_text(escaped) == text
    assert str(markup_to_html(escaped)) == escapeHtml(text)


def test_an_item_day_is_the_day_the_feed_wrote_not_utc(tmp_path: Path) -> None:
    path = tmp_path / "news.xml"
    items = rss_item("Early", date="Mon, 01 Jul 2019 00:30:00 +0200", link="relative/page/")
    items += rss_item("Late", date="Sun, 30 Jun 2019 23:30:00 -0500", link="mailto:press@example.org")
    path.write_text(rss(items, channel="<title>T</title>"), encoding="utf-8")
    parsed = read_feed(str(path))
    assert [(i.title, i.date, i.link) for i in parsed.items] == [
        ("Early", dt.date(2019, 7, 1), "relative/page/"),
        ("Late", dt.date(2019, 6, 30), "mailto:press@example.org"),
    ]
    drafted = draft_issue(parsed, dt.date(2019, 6, 30), today=dt.date(2019, 7, 2))
    assert drafted.warnings == (
        f"{path}: item 'Early': link 'relative/page/' is not an http(s) URL; the title is not linked",
        f"{path}: item 'Late': link 'mailto:press@example.org' is not an http(s) URL; the title is not linked",
    )
    issue = parse_issue(drafted.text, "draft")
    assert [s.url for s in stories(issue)] == [None, None]
    assert issue.news is not None and issue.news.more is None  # the feed names no site


def test_feed_text_that_reads_as_a_placeholder_is_drafted_with_parentheses_and_a_warning(
    workdir: Path, tmp_path: Path
) -> None:
    feed = tmp_path / "feed.xml"
    feed.write_text(
        rss(
            rss_item("Templates: how to write {name} in {{email}}", link="https://news.example.org/a")
            + rss_item("A plain story", link="https://news.example.org/b", body="<p>Say {first|last} here.</p>")
        ),
        encoding="utf-8",
    )
    result = mailer("draft", "--feed", str(feed), "--since", "2019-07-01", "-o", "issues/2019-08.yaml", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[:2] == [
        f"{feed}: item 'Templates: how to write {{name}} in {{{{email}}}}': {{name}} would read as a placeholder; "
        "written with parentheses, check it",
        f"{feed}: item 'A plain story': {{first|last}} would read as a placeholder; written with parentheses, check it",
    ]
    text = (workdir / "issues" / "2019-08.yaml").read_text(encoding="utf-8")
    assert "how to write (name) in ((email))" in text and "Say (first|last) here." in text
    assert mailer("check", "issues/2019-08.yaml", cwd=workdir).returncode == 0
