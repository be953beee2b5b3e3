"""Images that live with the issue, as a reader and an author notice them: size, orientation, privacy, format, refusals."""

from __future__ import annotations

import io
import pickle
import re
import struct
import zlib
from pathlib import Path

import pytest
from PIL import ExifTags, Image, ImageCms

from mailer.compose.images import ImageProblem, PreparedImage, prepare_image, total_weight_warning
from mailer.errors import MailerError

RED = (255, 0, 0)
BLUE = (0, 0, 255)


def reopen(prepared: PreparedImage) -> Image.Image:
    image = Image.open(io.BytesIO(prepared.data))
    image.load()
    return image


def close_to(pixel: object, colour: tuple[int, ...], tolerance: int = 40) -> bool:
    assert isinstance(pixel, tuple)
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour, strict=False))


def phone_photo(path: Path, size: tuple[int, int] = (3000, 2000)) -> Path:
    """A photo as a phone stores it: sideways with orientation 6, red in the stored top-left corner, GPS and camera."""
    image = Image.new("RGB", size, BLUE)
    image.paste(RED, (0, 0, size[0] // 10, size[1] // 10))
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "PhoneMaker"
    exif[ExifTags.Base.Model] = "Phone 12"
    exif[ExifTags.Base.DateTime] = "2016:02:14 10:11:12"
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.IFD.GPSInfo] = {
        ExifTags.GPS.GPSLatitudeRef: "N",
        ExifTags.GPS.GPSLatitude: (47.0, 29.0, 50.0),
        ExifTags.GPS.GPSLongitudeRef: "E",
        ExifTags.GPS.GPSLongitude: (19.0, 2.0, 27.0),
    }
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    image.save(path, "JPEG", exif=exif, icc_profile=srgb, comment=b"shot in Budapest by Ana", quality=90)
    return path


def test_phone_photo_is_upright_at_twice_the_display_width_and_carries_no_metadata(tmp_path: Path) -> None:
    source = phone_photo(tmp_path / "budapest.jpg")
    with Image.open(source) as original:  # the test's own input really carries what must go
        assert original.getexif()[ExifTags.Base.Make] == "PhoneMaker"
        assert original.getexif().get_ifd(ExifTags.IFD.GPSInfo)

    prepared = prepare_image(source, 552)

    assert (prepared.width, prepared.height) == (552, 828)
    assert (prepared.pixel_width, prepared.pixel_height) == (1104, 1656)
    assert prepared.media_type == "image/jpeg"
    assert re.fullmatch(r"budapest-[0-9a-f]{10}\.jpg", prepared.name)
    image = reopen(prepared)
    assert image.format == "JPEG"
    assert image.size == (1104, 1656)
    assert close_to(image.getpixel((1100, 4)), RED)  # the stored top-left is now the top-right
    assert close_to(image.getpixel((4, 4)), BLUE)
    assert close_to(image.getpixel((1100, 1650)), BLUE)
    assert len(image.getexif()) == 0
    assert not {"exif", "icc_profile", "comment", "xmp", "photoshop", "dpi"} & set(image.info)
    for secret in (b"PhoneMaker", b"Phone 12", b"2016:02:14", b"Budapest", b"Exif"):
        assert secret not in prepared.data
    assert prepared.source == source


def test_much_larger_jpeg_decoded_at_reduced_size_still_comes_out_exact_and_upright(tmp_path: Path) -> None:
    prepared = prepare_image(phone_photo(tmp_path / "big.jpg", size=(6000, 4000)), 552)
    assert (prepared.pixel_width, prepared.pixel_height) == (1104, 1656)
    image = reopen(prepared)
    assert image.size == (1104, 1656)
    assert close_to(image.getpixel((1100, 4)), RED)


def test_jpeg_is_progressive(tmp_path: Path) -> None:
    source = tmp_path / "photo.jpg"
    Image.effect_noise((1600, 1200), 40).convert("RGB").save(source, "JPEG")
    assert reopen(prepare_image(source, 552)).info.get("progressive") == 1


def test_photo_narrower_than_twice_the_column_keeps_its_pixels(tmp_path: Path) -> None:
    source = tmp_path / "portrait.jpg"
    Image.new("RGB", (600, 400), BLUE).save(source, "JPEG")
    prepared = prepare_image(source, 552)
    assert (prepared.pixel_width, prepared.pixel_height) == (600, 400)
    assert (prepared.width, prepared.height) == (552, 368)


def test_small_image_is_not_up_scaled_and_shows_at_its_own_size(tmp_path: Path) -> None:
    source = tmp_path / "logo.png"
    Image.new("RGB", (300, 120), BLUE).save(source, "PNG")
    prepared = prepare_image(source, 552)
    assert (prepared.width, prepared.height) == (300, 120)
    assert (prepared.pixel_width, prepared.pixel_height) == (300, 120)
    assert reopen(prepared).size == (300, 120)


def test_png_with_alpha_stays_png_and_keeps_its_transparency(tmp_path: Path) -> None:
    source = tmp_path / "Logo Transparent.png"
    image = Image.new("RGBA", (2000, 1000), (0, 0, 0, 0))
    image.paste((255, 0, 0, 255), (500, 250, 1500, 750))
    image.save(source, "PNG")

    prepared = prepare_image(source, 552)

    assert prepared.media_type == "image/png"
    assert re.fullmatch(r"logo-transparent-[0-9a-f]{10}\.png", prepared.name)
    result = reopen(prepared)
    assert result.format == "PNG"
    assert result.mode == "RGBA"
    assert result.size == (1104, 552)
    assert result.getpixel((5, 5)) == (0, 0, 0, 0)
    assert result.getpixel((552, 276)) == (255, 0, 0, 255)


def test_opaque_png_graphic_stays_png_without_an_alpha_channel(tmp_path: Path) -> None:
    source = tmp_path / "chart.png"
    Image.new("RGBA", (400, 300), (10, 120, 200, 255)).save(source, "PNG")
    prepared = prepare_image(source, 552)
    assert prepared.media_type == "image/png"
    assert reopen(prepared).mode == "RGB"


def test_gif_becomes_png_and_a_transparent_palette_colour_stays_transparent(tmp_path: Path) -> None:
    source = tmp_path / "badge.gif"
    image = Image.new("P", (200, 100), 0)
    image.putpalette([255, 255, 255, 255, 0, 0] + [0, 0, 0] * 254)
    image.paste(1, (50, 25, 150, 75))
    image.save(source, "GIF", transparency=0)

    prepared = prepare_image(source, 552)

    assert prepared.media_type == "image/png"
    assert prepared.name.endswith(".png")
    result = reopen(prepared)
    assert result.format == "PNG"
    assert result.getpixel((5, 5))[3] == 0  # type: ignore[index]
    assert result.getpixel((100, 50)) == (255, 0, 0, 255)


def test_opaque_gif_becomes_png_too(tmp_path: Path) -> None:
    source = tmp_path / "flat.gif"
    Image.new("RGB", (120, 60), RED).convert("P").save(source, "GIF")
    prepared = prepare_image(source, 552)
    assert prepared.media_type == "image/png"
    assert close_to(reopen(prepared).getpixel((60, 30)), RED, tolerance=0)


@pytest.mark.parametrize(("name", "format"), [("photo.webp", "WEBP"), ("scan.tiff", "TIFF"), ("old.bmp", "BMP")])
def test_webp_tiff_and_bmp_photos_become_jpeg(tmp_path: Path, name: str, format: str) -> None:
    source = tmp_path / name
    Image.new("RGB", (1500, 1000), BLUE).save(source, format)
    prepared = prepare_image(source, 552)
    assert prepared.media_type == "image/jpeg"
    assert reopen(prepared).size == (1104, 736)


def test_webp_with_transparency_becomes_png(tmp_path: Path) -> None:
    source = tmp_path / "sticker.webp"
    image = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    image.paste((0, 0, 255, 255), (25, 25, 75, 75))
    image.save(source, "WEBP", lossless=True)
    prepared = prepare_image(source, 552)
    assert prepared.media_type == "image/png"
    assert reopen(prepared).getpixel((2, 2))[3] == 0  # type: ignore[index]


def test_cmyk_jpeg_comes_out_rgb_in_about_the_same_colour(tmp_path: Path) -> None:
    source = tmp_path / "print.jpg"
    Image.new("CMYK", (400, 300), (0, 255, 255, 0)).save(source, "JPEG")
    result = reopen(prepare_image(source, 552))
    assert result.mode == "RGB"
    assert close_to(result.getpixel((200, 150)), RED)


def test_animated_gif_is_refused_rather_than_frozen(tmp_path: Path) -> None:
    source = tmp_path / "spinner.gif"
    frames = [Image.new("RGB", (50, 50), colour) for colour in (RED, BLUE, (0, 255, 0))]
    frames[0].save(source, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    with pytest.raises(ImageProblem) as caught:
        prepare_image(source, 552)
    assert str(caught.value) == (
        f"{source}: an animated Gif (3 frames); the email would show only the first: "
        "save the frame you want as PNG or JPEG"
    )


def test_same_file_twice_gives_the_same_bytes_and_name(tmp_path: Path) -> None:
    source = phone_photo(tmp_path / "budapest.jpg")
    first, second = prepare_image(source, 552), prepare_image(source, 552)
    assert first.name == second.name
    assert first.data == second.data
    copy = tmp_path / "elsewhere" / "budapest.jpg"
    copy.parent.mkdir()
    copy.write_bytes(source.read_bytes())
    assert prepare_image(copy, 552).name == first.name


def test_different_content_gives_a_different_name(tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "photo.jpg", tmp_path / "b" / "photo.jpg"
    for path, colour in ((first, RED), (second, BLUE)):
        path.parent.mkdir()
        Image.new("RGB", (800, 600), colour).save(path, "JPEG")
    assert prepare_image(first, 552).name != prepare_image(second, 552).name
    assert prepare_image(first, 552).name != prepare_image(first, 276).name


def test_name_is_the_stem_in_ascii_lower_case(tmp_path: Path) -> None:
    source = tmp_path / "Café Budapest (2016).JPG"
    Image.new("RGB", (80, 60), BLUE).save(source, "JPEG")
    assert re.fullmatch(r"cafe-budapest-2016-[0-9a-f]{10}\.jpg", prepare_image(source, 552).name)
    odd = tmp_path / "東京.png"
    Image.new("RGB", (80, 60), BLUE).save(odd, "PNG")
    assert re.fullmatch(r"image-[0-9a-f]{10}\.png", prepare_image(odd, 552).name)


def problem(path: Path) -> str:
    with pytest.raises(ImageProblem) as caught:
        prepare_image(path, 552)
    assert isinstance(caught.value, MailerError)
    assert caught.value.path == path
    message = str(caught.value)
    assert "\n" not in message
    assert message == f"{path}: {caught.value.reason}"
    return caught.value.reason


def test_missing_file(tmp_path: Path) -> None:
    assert problem(tmp_path / "nowhere.jpg") == "no such file"


def test_problem_survives_pickling_with_its_path_and_reason(tmp_path: Path) -> None:
    original = ImageProblem(tmp_path / "a.jpg", "no such file")
    copy = pickle.loads(pickle.dumps(original))
    assert (str(copy), copy.path, copy.reason) == (str(original), original.path, original.reason)


def test_directory(tmp_path: Path) -> None:
    assert problem(tmp_path) == "is a directory, not an image"


def test_truncated_jpeg(tmp_path: Path) -> None:
    whole = tmp_path / "whole.jpg"
    Image.effect_noise((800, 600), 60).convert("RGB").save(whole, "JPEG")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert problem(cut) == "the JPEG file is truncated or damaged; save or download it again"


def test_truncated_png(tmp_path: Path) -> None:
    whole = tmp_path / "whole.png"
    Image.effect_noise((400, 300), 60).convert("RGB").save(whole, "PNG")
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole.read_bytes()[:200])
    assert problem(cut) == "the PNG file is truncated or damaged; save or download it again"


def test_text_file_named_jpg(tmp_path: Path) -> None:
    source = tmp_path / "photo.jpg"
    source.write_text("Photo to follow — Ana\n", encoding="utf-8")
    assert problem(source) == "not an image Pillow can read as JPEG, PNG, GIF, WebP, TIFF or BMP (it looks like text)"


def test_pdf_named_png(tmp_path: Path) -> None:
    source = tmp_path / "flyer.png"
    source.write_bytes(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n")
    assert problem(source) == (
        "not an image Pillow can read as JPEG, PNG, GIF, WebP, TIFF or BMP "
        "(it looks like a PDF; export the page as PNG or JPEG)"
    )


def test_svg(tmp_path: Path) -> None:
    source = tmp_path / "logo.svg"
    source.write_text('<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>\n', encoding="utf-8")
    assert problem(source).endswith("(it looks like an SVG drawing; export it as PNG)")


def test_empty_file(tmp_path: Path) -> None:
    source = tmp_path / "empty.jpg"
    source.write_bytes(b"")
    assert problem(source) == "not an image Pillow can read as JPEG, PNG, GIF, WebP, TIFF or BMP: the file is empty"


def test_decompression_bomb(tmp_path: Path) -> None:
    source = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(source, "PNG")
    assert source.stat().st_size < 100_000
    assert problem(source) == (
        f"400,000,000 pixels, more than Pillow's limit of {Image.MAX_IMAGE_PIXELS:,} (a decompression bomb?); "
        "no newsletter photo needs that many: save it smaller"
    )


def test_image_just_over_the_limit_is_refused_too_not_warned_about(tmp_path: Path) -> None:
    source = tmp_path / "huge.png"
    Image.new("1", (10000, 10000)).save(source, "PNG")
    assert (Image.MAX_IMAGE_PIXELS or 0) < 10000 * 10000 < 2 * (Image.MAX_IMAGE_PIXELS or 0)
    assert problem(source).startswith("100,000,000 pixels, more than Pillow's limit")


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_zero_size_png(tmp_path: Path) -> None:
    source = tmp_path / "nothing.png"
    header = struct.pack(">IIBBBBB", 0, 10, 8, 2, 0, 0, 0)
    source.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )
    assert problem(source) == "the image has zero size (0x10 pixels)"


def prepared(name: str, size: int) -> PreparedImage:
    return PreparedImage(
        source=Path("images") / name,
        name=name,
        data=b"x" * size,
        width=552,
        height=368,
        pixel_width=1104,
        pixel_height=736,
        media_type="image/jpeg",
    )


def test_weight_warning_names_the_total_and_the_heaviest_file() -> None:
    images = [prepared("a.jpg", 300_000), prepared("b.jpg", 612_000), prepared("c.png", 250_000)]
    assert total_weight_warning(images) == (
        "the images weigh 1.2 MB together, more than 1.0 MB (slow on mobile data); "
        "the heaviest is images/b.jpg (612 KB): show it narrower, crop it, or use a JPEG for a photo"
    )


def test_no_weight_warning_within_the_limit_and_an_image_used_twice_counts_once() -> None:
    assert total_weight_warning([]) is None
    assert total_weight_warning([prepared("a.jpg", 600_000), prepared("a.jpg", 600_000)]) is None
    assert total_weight_warning([prepared("a.jpg", 1_000_000)]) is None
    assert total_weight_warning([prepared("a.jpg", 1_000_001)]) is not None
    assert total_weight_warning([prepared("a.jpg", 300_000)], limit=200_000) is not None


def test_weight_warning_on_real_prepared_photos(tmp_path: Path) -> None:
    photos = []
    for index in range(3):
        source = tmp_path / f"noise-{index}.jpg"
        Image.effect_noise((1600, 1200), 80 + index).convert("RGB").save(source, "JPEG", quality=95)
        photos.append(prepare_image(source, 552))
    warning = total_weight_warning(photos, limit=sum(len(p.data) for p in photos) - 1)
    assert warning is not None
    heaviest = max(photos, key=lambda p: len(p.data))
    assert f"the heaviest is {heaviest.source} (" in warning


def test_display_width_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        prepare_image(tmp_path / "any.jpg", 0)
