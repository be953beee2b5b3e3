"""Photos that live with the issue: checked, prepared with Pillow, written, published, served, previewed and sent.

The images are real files made here with Pillow: a large JPEG from a phone (EXIF GPS, camera, rotation tag) and a
PNG with transparency, named by paths relative to the issue file.
"""

from __future__ import annotations

import email
import email.policy
import io
import re
import shutil
import urllib.request
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from PIL import Image
from starlette.testclient import TestClient

from mailer.audience.database import open_database
from mailer.audience.lists import add_subscriber, create_list
from mailer.settings import load_settings
from mailer.web.public_web import create_app
from tests.browser import chromium, local_only
from tests.cli_helpers import run_cli
from tests.conftest import ROOT, SECRET
from tests.test_preview import PreviewServer

ISSUE = """\
title: March 2016 Monthly Update
date: 2016-03-10
preheader: Photos from Budapest and a new logo
news:
  stories:
    - title: Delegates in Budapest
      image: {src: 2016-03/budapest.jpg, alt: Delegates around a table in Budapest, credit: "Photo: ICMPD"}
      paragraphs: [Ministers met in Budapest.]
    - title: A new emblem
      image: {src: 2016-03/emblem.png, alt: The new emblem}
      paragraphs: [With a transparent background.]
"""


def make_photo(path: Path) -> None:
    """A 3000x2000 phone photo held sideways (orientation 6), with GPS and camera data; its top-left corner red."""
    image = Image.new("RGB", (3000, 2000), (40, 110, 180))
    image.paste((255, 0, 0), (0, 0, 300, 300))
    exif = image.getexif()
    exif[0x010F] = "Canon"  # Make
    exif[0x0110] = "EOS 5D"  # Model
    exif[0x0112] = 6  # rotate 90° clockwise to view
    exif.get_ifd(0x8825)[2] = (48.0, 12.0, 0.0)  # GPSLatitude
    image.save(path, exif=exif, quality=90)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "issues" / "2016-03").mkdir(parents=True)
    shutil.copy(ROOT / "mailer.toml", tmp_path / "mailer.toml")
    make_photo(tmp_path / "issues" / "2016-03" / "budapest.jpg")
    Image.new("RGBA", (400, 400), (0, 0, 0, 0)).save(tmp_path / "issues" / "2016-03" / "emblem.png")
    (tmp_path / "issues" / "2016-03.yaml").write_text(ISSUE, encoding="utf-8")
    return tmp_path


def render(project: Path, **env: str) -> dict[str, str]:
    result = run_cli("render", "issues/2016-03.yaml", "-o", "out", cwd=project, env=env)
    assert result.exit_code == 0, result.output
    return {name: (project / "out" / name).read_text(encoding="utf-8") for name in ("email.html", "web.html")}


def images_in(html: str) -> list[tuple[str, str, str]]:
    return re.findall(r'<img alt="([^"]*)" height="(\d+)" src="([^"]*)"', html)


def test_render_prepares_each_photo_upright_without_metadata_at_twice_its_display_width(project: Path) -> None:
    pages = render(project)
    written = sorted((project / "out" / "images").iterdir())
    assert [path.suffix for path in written] == [".jpg", ".png"]
    assert all(re.fullmatch(r"(budapest|emblem)-[0-9a-f]{10}\.(jpg|png)", path.name) for path in written)
    photo = Image.open(next(path for path in written if path.suffix == ".jpg"))
    assert photo.size == (1104, 1656), "twice the 552 px column, upright (it was held sideways)"
    corner = photo.getpixel((photo.width - 20, 20))
    assert isinstance(corner, tuple) and corner[0] > 200, "the red corner turned with the photo"
    assert not photo.getexif() and "exif" not in photo.info, "no camera or GPS data reaches subscribers"
    emblem = Image.open(next(path for path in written if path.suffix == ".png"))
    assert emblem.size == (400, 400) and emblem.mode in ("RGBA", "LA", "P"), "not up-scaled, still transparent"
    email_images, web_images = images_in(pages["email.html"]), images_in(pages["web.html"])
    names = {path.name for path in written}
    assert {src.rsplit("/", 1)[1] for _, _, src in email_images} == names
    assert all(src.startswith("https://newsletter.icmpd.org/2016-03/images/") for _, _, src in email_images)
    assert all(src.startswith("images/") for _, _, src in web_images), "the web version finds them beside it"
    widths = re.findall(r'src="images/budapest[^"]*" width="(\d+)"', pages["web.html"])
    assert (
        widths == ["552"] and ("Delegates around a table in Budapest", "828", f"images/{written[0].name}") in web_images
    )


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (None, "no such file"),
        (lambda path: path.write_text("not a picture"), "not an image"),
        (lambda path: path.write_bytes(Path(ROOT / "issues" / "2016-02.yaml").read_bytes()[:50]), "not an image"),
        (lambda path: Image.new("1", (20000, 20000)).save(path, format="PNG"), "pixels"),
    ],
    ids=["missing", "text", "garbage", "decompression-bomb"],
)
def test_check_refuses_an_unusable_image_at_its_line_and_column(project: Path, make: object, says: str) -> None:
    target = project / "issues" / "2016-03" / "emblem.png"
    target.unlink()
    if callable(make):
        make(target)
    result = run_cli("check", "issues/2016-03.yaml", cwd=project)
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("issues/2016-03.yaml:10:20: news.stories[1].image.src: ") and says in line, line


def test_a_path_outside_the_issue_folder_or_absolute_is_refused(project: Path) -> None:
    issue = project / "issues" / "2016-03.yaml"
    for src in ("../secrets.jpg", "/etc/passwd", "C:/photo.jpg"):
        issue.write_text(ISSUE.replace("2016-03/emblem.png", src), encoding="utf-8")
        result = run_cli("check", "issues/2016-03.yaml", cwd=project)
        assert result.exit_code == 1 and "inside its folder" in result.stderr, (src, result.stderr)


def test_images_over_1_mb_are_warned_about(project: Path) -> None:
    noise = Image.merge("RGBA", [Image.effect_noise((1200, 1200), 120) for _ in range(4)])
    noise.save(project / "issues" / "2016-03" / "emblem.png")  # transparent, so PNG: noise does not compress
    result = run_cli("render", "issues/2016-03.yaml", "-o", "out", cwd=project)
    assert result.exit_code == 0
    assert "images weigh" in result.output and "warning" in result.output


def sent_message(project: Path, database: str, **env: str) -> EmailMessage:
    engine = open_database(database)
    create_list(engine, "staff")
    add_subscriber(engine, "staff", "ana@example.org")
    engine.dispose()
    settings = {
        "MAILER_DATABASE_URL": database,
        "MAILER_SENDER": "ICMPD <news@icmpd.org>",
        "MAILER_UNSUBSCRIBE_SECRET": SECRET,
        **env,
    }
    result = run_cli(
        "send", "issues/2016-03.yaml", "--list", "staff", "--dry-run", "-o", "eml", cwd=project, env=settings
    )
    assert result.exit_code == 0, result.output
    [eml] = (project / "eml").glob("*.eml")
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_a_hosted_message_names_the_published_images(project: Path, tmp_path: Path) -> None:
    message = sent_message(project, f"sqlite:///{tmp_path / 'db.sqlite3'}")
    html = message.get_body(("html",))
    assert html is not None and message.get_content_type() == "multipart/alternative"
    sources = re.findall(r'src="([^"]+)"', html.get_content())
    assert [src for src in sources if "/2016-03/images/" in src] and not [s for s in sources if s.startswith("cid:")]


def test_an_embedded_message_carries_every_image_it_names(project: Path, tmp_path: Path) -> None:
    message = sent_message(project, f"sqlite:///{tmp_path / 'db.sqlite3'}", MAILER_IMAGES="embed")
    [text, related] = message.iter_parts()
    assert (text.get_content_type(), related.get_content_type()) == ("text/plain", "multipart/related")
    html, *images = related.iter_parts()
    cids = set(re.findall(r'src="cid:([^"]+)"', html.get_content()))
    assert len(cids) == 2 and "/images/" not in html.get_content()
    parts = {part["Content-ID"].strip("<>"): part for part in images}
    assert set(parts) == cids, "every cid: resolves to a part"
    for part in parts.values():
        picture = Image.open(io.BytesIO(part.get_content()))
        assert part.get_content_type() == f"image/{picture.format.lower()}"  # type: ignore[union-attr]


def test_publish_writes_the_images_and_serve_serves_them_for_a_year(project: Path, tmp_path: Path) -> None:
    result = run_cli("publish", "-o", "site", cwd=project)
    assert result.exit_code == 0, result.output
    published = sorted(path.name for path in (project / "site" / "2016-03" / "images").iterdir())
    assert len(published) == 2
    settings = load_settings(
        project / "mailer.toml",
        issues_dir=project / "issues",
        unsubscribe_secret=SECRET,
        sender="news@icmpd.org",
        database_url=f"sqlite:///{tmp_path / 'serve.sqlite3'}",
    )
    engine = open_database(settings.database_url)
    with TestClient(create_app(settings, engine)) as web:
        answer = web.get(f"/2016-03/images/{published[0]}")
        assert answer.status_code == 200
        assert answer.content == (project / "site" / "2016-03" / "images" / published[0]).read_bytes()
        assert answer.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert web.get("/2016-03/images/other-0123456789.jpg").status_code == 404
    engine.dispose()


@pytest.fixture
def preview(project: Path) -> Iterator[PreviewServer]:
    server = PreviewServer(project)
    yield server
    server.stop()


def test_the_preview_shows_the_photos_before_they_are_published(preview: PreviewServer) -> None:
    OUTPUT = ROOT / "test-output"
    OUTPUT.mkdir(exist_ok=True)
    with chromium() as browser:
        for width in (375, 800):
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.route("**/*", local_only)
            for kind in ("email.html", "web.html"):
                page.goto(f"{preview.url}/issue/2016-03/{kind}")
                page.wait_for_load_state("load")
                loaded = page.evaluate(
                    "[...document.images].filter(i => i.src.includes('/images/')).map(i => [i.naturalWidth, i.width])"
                )
                assert len(loaded) == 2 and all(natural > 0 for natural, _ in loaded), kind
                assert all(shown <= width for _, shown in loaded)
            page.screenshot(path=str(OUTPUT / f"local-images-2016-03-{width}.png"), full_page=True)
            page.close()
    with urllib.request.urlopen(f"{preview.url}/issue/2016-03/web.html") as answer:
        name = re.search(r'src="images/([^"]+)"', answer.read().decode())
    assert name
    with urllib.request.urlopen(f"{preview.url}/issue/2016-03/images/{name.group(1)}") as answer:
        assert answer.headers["Content-Type"] in ("image/jpeg", "image/png")


def test_a_local_logo_and_icons_from_the_config_are_prepared_and_published_with_the_issue(project: Path) -> None:
    Image.new("RGBA", (640, 160), (255, 255, 255, 255)).save(project / "logo.png")
    Image.new("RGBA", (96, 96), (255, 255, 255, 0)).save(project / "icon.png")
    config = (project / "mailer.toml").read_text(encoding="utf-8")
    config = re.sub(r'src = "https://[^"]*logo[^"]*"', 'src = "logo.png"', config)
    config = re.sub(r'icon = "https://[^"]*"', 'icon = "icon.png"', config)
    (project / "mailer.toml").write_text(config, encoding="utf-8")
    pages = render(project)
    names = {path.name.split("-")[0] for path in (project / "out" / "images").iterdir()}
    assert names == {"budapest", "emblem", "logo", "icon"}
    logo = next((project / "out" / "images").glob("logo-*.png"))
    assert Image.open(logo).size == (320, 80), "twice the logo's display width of 160 px"
    assert f'src="https://newsletter.icmpd.org/2016-03/images/{logo.name}"' in pages["email.html"]
    assert f'content="https://newsletter.icmpd.org/2016-03/images/{logo.name}"' in pages["web.html"]
    (project / "logo.png").unlink()
    result = run_cli("render", "issues/2016-03.yaml", "-o", "out", cwd=project)
    assert result.exit_code == 1 and result.stderr.startswith("branding.logo.src: logo.png: no such file")


def test_a_pipe_or_a_link_out_of_the_issues_folder_is_refused_not_followed(project: Path, tmp_path: Path) -> None:
    import os

    outside = tmp_path / "outside.png"
    Image.new("RGB", (10, 10)).save(outside)
    issue = project / "issues" / "2016-03.yaml"
    for name, make in (("pipe.png", lambda p: os.mkfifo(p)), ("link.png", lambda p: p.symlink_to(outside))):
        make(project / "issues" / "2016-03" / name)
        issue.write_text(ISSUE.replace("2016-03/emblem.png", f"2016-03/{name}"), encoding="utf-8")
        result = run_cli("check", "issues/2016-03.yaml", cwd=project)
        assert result.exit_code == 1 and ("regular file" in result.stderr or "outside" in result.stderr), result.stderr


def test_a_sixteen_bit_grey_photo_keeps_its_greys(tmp_path: Path) -> None:
    from mailer.compose.images import prepare_image

    Image.new("I;16", (300, 200), 30000).save(tmp_path / "grey.png")
    prepared = prepare_image(tmp_path / "grey.png", 552)
    pixel = Image.open(io.BytesIO(prepared.data)).convert("L").getpixel((10, 10))
    assert isinstance(pixel, int) and 100 < pixel < 130, "about 46 % grey, not white"


def test_serve_shows_a_replaced_photo_without_a_restart(project: Path, tmp_path: Path) -> None:
    settings = load_settings(
        project / "mailer.toml",
        issues_dir=project / "issues",
        unsubscribe_secret=SECRET,
        sender="news@icmpd.org",
        database_url=f"sqlite:///{tmp_path / 'serve.sqlite3'}",
    )
    engine = open_database(settings.database_url)
    with TestClient(create_app(settings, engine)) as web:
        before = re.findall(r'src="images/(emblem-[^"]+)"', web.get("/2016-03/").text)
        Image.new("RGBA", (300, 300), (200, 0, 0, 128)).save(project / "issues" / "2016-03" / "emblem.png")
        after = re.findall(r'src="images/(emblem-[^"]+)"', web.get("/2016-03/").text)
        assert before and after and before != after
        assert web.get(f"/2016-03/images/{after[0]}").status_code == 200
    engine.dispose()
