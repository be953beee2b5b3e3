"""The newsletter issue format: what one YAML file in issues/ may say."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, model_validator

from mailer.compose.images import ImageProblem
from mailer.compose.issue_images import check_local_path, is_local, prepared
from mailer.compose.markup import check_markup
from mailer.compose.placeholders import check_greeting
from mailer.urls import Url, check_absolute_url

SCHEMA_ID = "https://github.com/mailer/mailer/schema/issue.schema.json"

Text = Annotated[str, Field(min_length=1, description="Plain text; shown as written, never as HTML.")]
Paragraph = Annotated[
    str,
    Field(
        min_length=1,
        description="A paragraph of text with optional inline markup: *emphasis*, "
        "**strong** and [label](https://example.org/). Any HTML is shown as text.",
    ),
    AfterValidator(check_markup),
]
Greeting = Annotated[Text, AfterValidator(check_greeting)]
"""Text whose {name} placeholders are filled per recipient (compose/placeholders.py)."""
Language = Annotated[
    str,
    Field(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$", description="A language tag such as en or de-AT."),
]


class Part(BaseModel):
    """Base of every part of an issue: unknown keys are errors, text is trimmed."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, coerce_numbers_to_str=True)


class Link(Part):
    label: Text
    url: Url
    language: Language | None = Field(None, description="Language of the linked page, e.g. for downloads per language.")


def _check_image_source(src: str, info: ValidationInfo) -> str:
    """An absolute URL, or a file beside the issue that Pillow can prepare (checked here, so `mailer check` says)."""
    if not is_local(src):
        check_absolute_url(src)
        return src
    check_local_path(src)
    folder = (info.context or {}).get("issue_dir")
    if folder is None:
        raise ValueError(f"a local image ({src!r}) needs the issue file's folder; give an absolute URL here")
    file = Path(folder) / src
    if not file.resolve().is_relative_to(Path(folder).resolve()):
        raise ValueError(f"{src!r} leads outside the issue's folder (through a symbolic link); copy the image in")
    try:
        prepared(file)
    except ImageProblem as problem:
        raise ValueError(str(problem)) from None
    return src


ImageSource = Annotated[
    str,
    AfterValidator(_check_image_source),
    Field(
        description="An absolute http(s) URL, or a path relative to the issue file (2016-02/budapest.jpg): "
        "resized, stripped of metadata and published with the issue."
    ),
]


class Image(Part):
    src: ImageSource
    alt: Text = Field(description="What the image shows, for readers who do not see it.")
    credit: Text | None = Field(None, description="Photo credit shown under the image.")
    url: Url | None = Field(None, description="Where a click on the image leads.")
    _file: Path | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _locate(self, info: ValidationInfo) -> Image:
        folder = (info.context or {}).get("issue_dir")
        if folder is not None and is_local(self.src):
            self._file = Path(folder) / self.src
        return self

    @property
    def file(self) -> Path | None:
        """The local file this image is made from; None for an absolute URL."""
        return self._file


class Story(Part):
    category: Text | None = Field(None, description='A kicker such as "Expert Voice" or "Project News".')
    title: Text
    url: Url | None = Field(None, description="Where the title links to.")
    date: dt.date | None = None
    image: Image | None = None
    paragraphs: list[Paragraph] = Field(default_factory=list)
    links: list[Link] = Field(
        default_factory=list, description='The row of links under the story ("Read the blog | ...").'
    )


class Spotlight(Part):
    heading: Text = "In the spotlight"
    headline: Text
    url: Url | None = None
    image: Image | None = None
    intro: list[Paragraph] = Field(default_factory=list)
    stories: list[Story] = Field(default_factory=list)
    more: Link | None = None


class StorySection(Part):
    heading: Text | None = None
    stories: list[Story] = Field(min_length=1)
    more: Link | None = Field(None, description='A closing link such as "More news from ICMPD...".')


class Publication(Part):
    kind: Text | None = Field(None, description='"Working Paper", "Briefing Paper", "Report"...')
    title: Text
    url: Url | None = None
    authors: list[Text] = Field(default_factory=list)
    image: Image | None = None
    summary: list[Paragraph] = Field(default_factory=list)
    downloads: list[Link] = Field(default_factory=list, description="One link per file, e.g. one per language.")


class Publications(Part):
    heading: Text = "Latest publications"
    items: list[Publication] = Field(min_length=1)
    more: Link | None = None


class Event(Part):
    date: dt.date = Field(description="The day the event starts (YYYY-MM-DD).")
    end: dt.date | None = Field(None, description="The last day, for events of several days.")
    programme: Text | None = Field(None, description='A programme tag such as "MIEUX" or "THB/IFS/2".')
    title: Text
    place: Text | None = Field(None, description='Where it happens, e.g. "Lilongwe, Malawi".')
    url: Url | None = None

    @model_validator(mode="after")
    def _end_not_before_start(self) -> Event:
        if self.end is not None and self.end < self.date:
            raise ValueError(f"end {self.end.isoformat()} is before date {self.date.isoformat()}")
        return self


class Events(Part):
    heading: Text = "Upcoming events"
    items: list[Event] = Field(min_length=1)
    more: Link | None = None


class Issue(Part):
    """One newsletter issue."""

    model_config = ConfigDict(title="Newsletter issue", json_schema_extra={"$id": SCHEMA_ID})

    title: Text = Field(description='The issue title, e.g. "February 2016 Monthly Update".')
    date: dt.date = Field(description="The publication date (YYYY-MM-DD).")
    status: Literal["draft", "ready"] = Field(
        "ready",
        description="draft: only previews and test sends; never published or sent to a list. "
        "ready (the default): may be published from its date on and sent.",
    )
    language: Language = "en"
    calls_itself: Text = Field(
        "newsletter",
        description='The issue\'s word for itself, as in "If the newsletter is not displayed properly", e.g. "infomail".',
    )
    subject: Text | None = Field(None, description="The email subject; the title when left out.")
    preheader: Text = Field(max_length=200, description="The preview line mail clients show after the subject.")
    in_this_issue: Text | None = Field(
        None, description='The "In this issue" line; made from the spotlight when left out.'
    )
    greeting: Greeting | None = Field(
        None,
        description='An opening line, e.g. "Dear {name},": {name} becomes the subscriber\'s name. '
        '"{name|colleague}" says "colleague" to subscribers without a name; without a fallback they get '
        "the default_greeting setting instead of the line (or no line). Write {{ and }} for literal braces.",
    )
    spotlight: Spotlight | None = None
    news: StorySection | None = None
    section_links: list[Link] = Field(
        default_factory=list, description='Links to standing pages: "Current vacancies", "In the media"...'
    )
    publications: Publications | None = None
    events: Events | None = None
    other_news: StorySection | None = None
    photo_credits: Text | None = None

    @property
    def direction(self) -> Literal["ltr", "rtl"]:
        """The writing direction of the issue's language: Arabic, Hebrew, Persian, Urdu... read right to left."""
        return "rtl" if self.language.split("-")[0].lower() in RIGHT_TO_LEFT else "ltr"

    @property
    def is_draft(self) -> bool:
        return self.status == "draft"

    @property
    def email_subject(self) -> str:
        return self.subject or self.title

    @property
    def in_this_issue_line(self) -> str | None:
        if self.in_this_issue:
            return self.in_this_issue
        if self.spotlight:
            return f"{self.spotlight.heading}: {self.spotlight.headline}"
        return None


RIGHT_TO_LEFT = frozenset({"ar", "arc", "ckb", "dv", "fa", "he", "ku", "ps", "sd", "ug", "ur", "yi"})


def human_date(day: dt.date) -> str:
    """'5 February 2016', the way the newsletter writes a day."""
    return f"{day.day} {day:%B %Y}"


def event_dates(event: Event) -> str:
    """'17–19 February', '29 February – 4 March', '31 December 2016 – 2 January 2017'."""
    start, end = event.date, event.end
    if end is None or end == start:
        return f"{start.day} {start:%B}"
    if start.year != end.year:
        return f"{start.day} {start:%B %Y} – {end.day} {end:%B %Y}"
    if start.month != end.month:
        return f"{start.day} {start:%B} – {end.day} {end:%B}"
    return f"{start.day}–{end.day} {start:%B}"


def issue_json_schema() -> dict[str, object]:
    schema = Issue.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
