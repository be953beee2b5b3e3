"""Images that live with the issue: each file becomes an upright, metadata-free JPEG or PNG at twice its display width.

The rules, so that what an author sees in the email is predictable:

- Size: the prepared file is at most twice the display width (sharp on high-density screens) and never
  up-scaled. The `<img width>` is `min(display_width, pixel width)`: a 600 px photo in a 552 px column
  keeps its 600 pixels and shows at 552; a 300 px logo shows at 300, never stretched beyond its pixels
  at 1x. Heights follow in proportion. Resampling is LANCZOS; a JPEG much larger than needed is
  decoded at 1/2, 1/4 or 1/8 size first (`Image.draft`), never below twice the final size.
- Orientation: the EXIF orientation tag is applied before anything else, so phone photos come out upright.
- Metadata: none is kept (no EXIF, GPS, camera, date, XMP, IPTC, comments, DPI). An embedded colour
  profile (Display P3 from phones, Adobe RGB, CMYK press profiles) is converted to sRGB and then dropped,
  since sRGB is what email clients assume; CMYK without a profile is converted naively.
- Format: PNG for graphics, JPEG (quality 82, progressive, optimised) for photos. Graphics are PNG and GIF
  sources and anything with visible transparency (alpha below 255 anywhere, or a transparent palette
  colour); everything else (JPEG, WebP, TIFF, BMP) is a photo. PNG output is optimised.
- Animation: an animated GIF, PNG or WebP is refused rather than silently frozen on its first frame.
  A multi-picture JPEG (MPO, as some cameras write) and a multi-page TIFF use their first picture.
- Names: the source file's stem, slugified, + "-" + the first 10 hex digits of the SHA-256 of the output
  bytes + ".jpg" or ".png". The same file gives the same bytes and name on every run; a new Pillow,
  libjpeg or zlib may encode differently and so rename.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import re
import struct
import unicodedata
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import ExifTags, Image, ImageCms, ImageOps, UnidentifiedImageError

from mailer.errors import MailerError

ACCEPTED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP")
"""What Pillow may decode (a multi-picture JPEG opens through "JPEG" as MPO); other plugins stay off: EPS would run Ghostscript."""

ACCEPTED_WORDS = "JPEG, PNG, GIF, WebP, TIFF or BMP"
JPEG_QUALITY = 82
DRAFT_GAP = 2
"""A JPEG is decoded at reduced size only down to this many times its final size, so LANCZOS still has detail to work with."""

_GRAPHIC_FORMATS = {"PNG", "GIF"}
_ANIMATED_FORMATS = {"PNG", "GIF", "WEBP"}
_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@dataclass(frozen=True)
class PreparedImage:
    """One image as the email and the web version use it; `name` changes whenever the bytes do."""

    source: Path
    name: str
    data: bytes = field(repr=False)
    width: int
    height: int
    pixel_width: int
    pixel_height: int
    media_type: str


class ImageProblem(MailerError):
    """An image file that cannot be used; `reason` is the line without the path, for callers that place it themselves."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self) -> tuple[type[ImageProblem], tuple[Path, str]]:
        return (type(self), (self.path, self.reason))  # survives pickling (worker processes)


def prepare_image(path: Path, display_width: int) -> PreparedImage:
    """The file at `path`, ready to be shown `display_width` CSS px wide (or narrower, if it has fewer pixels)."""
    if display_width < 1:
        raise ValueError(f"display_width must be at least 1, got {display_width}")
    try:
        file = path.open("rb")
    except FileNotFoundError:
        raise ImageProblem(path, "no such file") from None
    except IsADirectoryError:
        raise ImageProblem(path, "is a directory, not an image") from None
    except OSError as error:
        raise ImageProblem(path, f"cannot read: {error.strerror}") from None
    with file:
        image, source_format, (full_width, full_height) = _decode(path, file, display_width)

    pixel_width = min(2 * display_width, full_width)
    pixel_height = _in_proportion(pixel_width, full_width, full_height)
    if image.size != (pixel_width, pixel_height):
        image = image.resize((pixel_width, pixel_height), Image.Resampling.LANCZOS)
    data, extension, media_type = _encode(image, source_format)
    width = min(display_width, pixel_width)
    return PreparedImage(
        source=path,
        name=f"{_slug(path.stem)}-{hashlib.sha256(data).hexdigest()[:10]}{extension}",
        data=data,
        width=width,
        height=_in_proportion(width, full_width, full_height),
        pixel_width=pixel_width,
        pixel_height=pixel_height,
        media_type=media_type,
    )


def total_weight_warning(images: Iterable[PreparedImage], limit: int = 1_000_000) -> str | None:
    """One line when the issue's images together pass `limit` bytes (1 MB = 1,000,000); an image used twice counts once."""
    unique = {image.name: image for image in images}
    total = sum(len(image.data) for image in unique.values())
    if total <= limit:
        return None
    heaviest = max(unique.values(), key=lambda image: (len(image.data), image.name))
    return (
        f"the images weigh {total / 1e6:.1f} MB together, more than {limit / 1e6:.1f} MB (slow on mobile data); "
        f"the heaviest is {heaviest.source} ({len(heaviest.data) / 1e3:.0f} KB): "
        "show it narrower, crop it, or use a JPEG for a photo"
    )


def _decode(path: Path, file: io.BufferedReader, display_width: int) -> tuple[Image.Image, str, tuple[int, int]]:
    """The upright, fully decoded image, its source format and its full upright size, read from `file` once."""
    source_format = "?"
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        warnings.simplefilter("ignore", UserWarning)  # Pillow's "opening failed" notes: the sniffed line says it better
        try:
            with Image.open(file, formats=ACCEPTED_FORMATS) as opened:
                source_format = opened.format or "?"
                _check_size(path, opened.size)
                if source_format in _ANIMATED_FORMATS and getattr(opened, "is_animated", False):
                    frames = getattr(opened, "n_frames", 2)
                    raise ImageProblem(
                        path,
                        f"an animated {source_format.title()} ({frames} frames); the email would show only "
                        "the first: save the frame you want as PNG or JPEG",
                    )
                orientation = opened.getexif().get(ExifTags.Base.Orientation, 1)
                stored_width, stored_height = opened.size
                if orientation in _SWAPPING_ORIENTATIONS:
                    full_width, full_height = stored_height, stored_width
                else:
                    full_width, full_height = stored_width, stored_height
                wanted = min(2 * display_width, full_width)
                wanted_height = _in_proportion(wanted, full_width, full_height)
                draft = (DRAFT_GAP * wanted, DRAFT_GAP * wanted_height)
                if orientation in _SWAPPING_ORIENTATIONS:
                    draft = (draft[1], draft[0])
                opened.draft(None, draft)
                opened.load()
                upright = ImageOps.exif_transpose(opened)
        except ImageProblem:
            raise
        except UnidentifiedImageError:
            raise ImageProblem(path, _not_an_image(file)) from None
        except Image.DecompressionBombError as error:
            raise ImageProblem(path, _bomb(error)) from None
        except Image.DecompressionBombWarning as error:
            raise ImageProblem(path, _bomb(error)) from None
        except (OSError, SyntaxError, EOFError, struct.error):
            raise ImageProblem(
                path, f"the {_format_word(source_format)} file is truncated or damaged; save or download it again"
            ) from None
    return upright, source_format, (full_width, full_height)


def _check_size(path: Path, size: tuple[int, int]) -> None:
    """Zero size, and the bomb limit again: `catch_warnings` is process-wide, so another thread may have reset it."""
    width, height = size
    if width < 1 or height < 1:
        raise ImageProblem(path, f"the image has zero size ({width}x{height} pixels)")
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        raise ImageProblem(path, _too_many_pixels(width, height, limit))


def _bomb(error: Exception) -> str:
    """Pillow's bomb message, said for people: how big, against which limit."""
    numbers = re.findall(r"\d+", str(error))
    pixels = f"{int(numbers[0]):,} pixels" if numbers else "too many pixels"
    return (
        f"{pixels}, more than Pillow's limit of {Image.MAX_IMAGE_PIXELS or 0:,} (a decompression bomb?); "
        "no newsletter photo needs that many: save it smaller"
    )


def _too_many_pixels(width: int, height: int, limit: int) -> str:
    return (
        f"{width}x{height} = {width * height:,} pixels, more than Pillow's limit of {limit:,} (a decompression bomb?); "
        "no newsletter photo needs that many: save it smaller"
    )


def _in_proportion(width: int, full_width: int, full_height: int) -> int:
    """The height that goes with `width`, rounded half up, at least 1."""
    return max(1, (2 * width * full_height + full_width) // (2 * full_width))


def _encode(image: Image.Image, source_format: str) -> tuple[bytes, str, str]:
    """The image's bytes with nothing but pixels, its extension and its media type."""
    image = _to_srgb(image)
    if image.mode in ("RGBA", "LA"):
        alpha = image.getchannel("A").getextrema()
        if alpha[0] == 255:
            image = image.convert("RGB" if image.mode == "RGBA" else "L")
    graphic = image.mode in ("RGBA", "LA") or source_format in _GRAPHIC_FORMATS
    image.info = {}
    out = io.BytesIO()
    if graphic:
        image.save(out, "PNG", optimize=True)
        return out.getvalue(), ".png", "image/png"
    image.save(out, "JPEG", quality=JPEG_QUALITY, progressive=True, optimize=True)
    return out.getvalue(), ".jpg", "image/jpeg"


def _to_srgb(image: Image.Image) -> Image.Image:
    """The image in one of L, LA, RGB or RGBA, its colours in sRGB; a profile that cannot be read is ignored."""
    if image.mode == "P" or image.mode == "PA":
        image = image.convert("RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB")
    elif image.mode in ("L", "RGB") and "transparency" in image.info:
        image = image.convert("LA" if image.mode == "L" else "RGBA")
    elif image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):
        # 16 bits a pixel: scaled down to 8 (convert("L") would clip everything over 255 to white)
        image = image.convert("I").point(lambda value: value / 256).convert("L")
    elif image.mode in ("1", "F"):
        image = image.convert("L")
    elif image.mode == "La":
        image = image.convert("LA")
    elif image.mode not in ("L", "LA", "RGB", "RGBA", "CMYK"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    profile = image.info.get("icc_profile")
    if profile and image.mode in ("RGB", "RGBA", "CMYK"):
        try:
            converted = ImageCms.profileToProfile(
                image,
                ImageCms.ImageCmsProfile(io.BytesIO(profile)),
                _SRGB,
                outputMode="RGBA" if image.mode == "RGBA" else "RGB",
            )
        except (ImageCms.PyCMSError, OSError, ValueError):
            converted = None
        if converted is not None:
            image = converted
    if image.mode == "CMYK":
        image = image.convert("RGB")
    return image


def _format_word(source_format: str) -> str:
    return {"MPO": "JPEG", "WEBP": "WebP", "?": "image"}.get(source_format, source_format)


def _not_an_image(file: io.BufferedReader) -> str:
    """Why the file is not an image, from its first bytes, with what to do about it."""
    file.seek(0)
    head = file.read(512)
    refused = f"not an image Pillow can read as {ACCEPTED_WORDS}"
    if not head:
        return f"{refused}: the file is empty"
    zero = _zero_size(head)
    if zero is not None:
        return f"the image has zero size ({zero[0]}x{zero[1]} pixels)"
    looks = _looks_like(head)
    if looks is None:
        return refused
    return f"{refused} (it looks like {looks})"


def _zero_size(head: bytes) -> tuple[int, int] | None:
    """The declared size of a PNG or GIF header that says zero pixels wide or high (Pillow refuses those unnamed)."""
    size: tuple[int, int] | None = None
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR" and len(head) >= 24:
        size = struct.unpack(">II", head[16:24])
    elif head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        size = struct.unpack("<HH", head[6:10])
    if size is not None and 0 in size:
        return size
    return None


_SIGNATURES = (
    (b"%PDF", "a PDF; export the page as PNG or JPEG"),
    (b"\x89PNG", "a damaged PNG; save it again"),
    (b"\xff\xd8\xff", "a damaged JPEG; save it again"),
    (b"GIF8", "a damaged GIF; save it again"),
    (b"8BPS", "a Photoshop file; export it as PNG or JPEG"),
    (b"PK\x03\x04", "a ZIP archive or an Office document; export the picture as PNG or JPEG"),
    (b"%!PS", "PostScript; export it as PNG or JPEG"),
)


def _looks_like(head: bytes) -> str | None:
    for signature, looks in _SIGNATURES:
        if head.startswith(signature):
            return looks
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"mif1", b"msf1", b"hevc", b"avif", b"avis"):
            return "a HEIC or AVIF photo; save it as JPEG"
        return "a video; save a still as JPEG"
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head)  # the 512 bytes may end inside a character
    except UnicodeDecodeError:
        return None
    lowered = text.lstrip("\ufeff \t\r\n").lower()
    if "<svg" in lowered:
        return "an SVG drawing; export it as PNG"
    if lowered.startswith(("<!doctype html", "<html")):
        return "an HTML page"
    if "\x00" in text:
        return None
    return "text"


def _slug(stem: str) -> str:
    """The file's stem as ASCII lower case words joined by hyphens ("Café Budapest" -> "cafe-budapest")."""
    ascii_stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_stem.lower()).strip("-")
    return slug[:60].rstrip("-") or "image"
