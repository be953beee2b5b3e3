"""The render command's pipeline: validate every issue, render everything, then write atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mailer.compose.images import PreparedImage, total_weight_warning
from mailer.compose.issues_folder import slug_of
from mailer.compose.load import MAX_ISSUE_BYTES, PlacedIssue, load_placed_issue
from mailer.compose.model import Issue
from mailer.compose.render import IMAGES_FOLDER, RenderedIssue, render_issue
from mailer.errors import IssueFileError, MailerError, Problem, UsageError
from mailer.settings import Settings

GMAIL_CLIP_BYTES = 102 * 1024
WARN_BYTES = 90 * 1024


def size_warning(email_html_bytes: int) -> str | None:
    """What to tell the author about the email HTML's size: Gmail cuts off what passes 102 KB."""
    if email_html_bytes > GMAIL_CLIP_BYTES:
        return "Gmail clips messages over 102 KB: readers will see '[Message clipped]'"
    if email_html_bytes > WARN_BYTES:
        return "close to Gmail's 102 KB clipping limit"
    return None


@dataclass(frozen=True)
class WrittenFile:
    path: Path
    size: int
    description: str
    note: str | None = None
    """A warning of its own (the images of an issue weighing over 1 MB), besides the email's size warning."""

    @property
    def warning(self) -> str | None:
        if self.note:
            return self.note
        if self.path.suffix != ".html" or self.description != "email":
            return None
        return size_warning(self.size)

    def summary(self) -> str:
        line = f"{self.path}  {self.size / 1024:.1f} KB  {self.description}"
        return f"{line}  (warning: {self.warning})" if self.warning else line


def load_all(paths: list[Path], *, max_bytes: int = MAX_ISSUE_BYTES) -> list[tuple[Path, Issue]]:
    """Validate every file before anything is rendered; all problems of all files are reported together."""
    return [(path, placed.issue) for path, placed in load_all_placed(paths, max_bytes=max_bytes)]


def load_all_placed(paths: list[Path], *, max_bytes: int = MAX_ISSUE_BYTES) -> list[tuple[Path, PlacedIssue]]:
    """load_all, keeping the place of every value (for the link check)."""
    loaded: list[tuple[Path, PlacedIssue]] = []
    problems: list[Problem] = []
    messages: list[str] = []
    for path in paths:
        try:
            loaded.append((path, load_placed_issue(path, max_bytes=max_bytes)))
        except IssueFileError as error:
            problems.extend(error.problems)
        except MailerError as error:
            messages.append(str(error))
    if messages:
        raise MailerError("\n".join(messages + [str(problem) for problem in problems]))
    if problems:
        raise IssueFileError(problems)
    return loaded


def output_files(rendered: RenderedIssue, out_dir: Path) -> dict[Path, tuple[str, str]]:
    return {
        out_dir / "email.html": (rendered.email_html, "email"),
        out_dir / "email.txt": (rendered.text, "plain-text alternative"),
        out_dir / "web.html": (rendered.web_html, "web version"),
    }


def image_files(rendered: RenderedIssue, out_dir: Path) -> dict[Path, PreparedImage]:
    """The issue's local images as files beside web.html: out_dir/images/<content-hashed name>."""
    return {out_dir / IMAGES_FOLDER / image.name: image for image in rendered.images}


def _file_mode() -> int:
    """What open() would give a new file under the current umask (mkstemp's 0600 would hide a site from its server)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_atomically(files: Mapping[Path, str | bytes]) -> None:
    """Write every file to a temporary sibling first, then move them all into place.

    A failure before the moves (disk full, permissions) leaves every previous file as it was.
    """
    staged: list[tuple[Path, Path]] = []
    mode = _file_mode()
    try:
        for path, content in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            staged.append((Path(tmp_name), path))
            os.chmod(tmp_name, mode)
            with os.fdopen(fd, "wb") as handle:
                handle.write(content.encode("utf-8") if isinstance(content, str) else content)
                handle.flush()
                os.fsync(handle.fileno())
    except OSError as error:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise MailerError(f"{error.filename or ''}: cannot write: {error.strerror}; nothing was changed") from None
    for tmp, path in staged:
        os.replace(tmp, path)


def build(
    paths: list[Path], settings: Settings, *, out_dir: Path | None = None, build_root: Path = Path("build")
) -> list[WrittenFile]:
    if out_dir is not None and len(paths) != 1:
        raise UsageError("-o/--output names the folder of one issue; render several issues without it")
    rendered = [
        (render_issue(issue, slug_of(path), settings), out_dir or build_root / slug_of(path))
        for path, issue in load_all(paths, max_bytes=settings.max_issue_bytes)
    ]
    written: list[WrittenFile] = []
    contents: dict[Path, str | bytes] = {}
    for result, folder in rendered:
        for path, (content, description) in output_files(result, folder).items():
            contents[path] = content
            written.append(WrittenFile(path, len(content.encode("utf-8")), description))
        images = image_files(result, folder)
        heavy = total_weight_warning(images.values())
        for number, (path, image) in enumerate(images.items(), start=1):
            contents[path] = image.data
            note = heavy if number == len(images) else None
            written.append(WrittenFile(path, len(image.data), f"image {image.pixel_width}x{image.pixel_height}", note))
    write_atomically(contents)
    return written
