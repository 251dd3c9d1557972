"""Upload checks on real image bytes made with Pillow, and on hostile ones crafted by hand."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import zlib

import pytest
from PIL import Image

from app.images import (
    THUMBNAIL_CONTENT_TYPE,
    ImageInfo,
    ImageRejected,
    input_key,
    inspect_image,
    make_thumbnail,
)
from app.storage import validate_key

MB = 1024 * 1024
LIMITS = {"max_bytes": 20 * MB, "max_pixels": 40_000_000}


def encode(
    fmt: str, size: tuple[int, int] = (64, 48), mode: str = "RGB", noise: bool = False, **save: object
) -> bytes:
    if noise:
        img = Image.frombytes(mode, size, os.urandom(size[0] * size[1] * len(mode)))
    else:
        img = Image.new(mode, size, (200, 30, 60, 255)[: len(mode)] if mode != "L" else 128)
    out = io.BytesIO()
    img.save(out, fmt, **save)
    return out.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def crafted_png(width: int, height: int, idat: bytes) -> bytes:
    """A 1-bit greyscale PNG with whatever IDAT we like: the header alone claims the size."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )


def reject(data: bytes, filename: str | None = "upload.png", **limits: int) -> ImageRejected:
    with pytest.raises(ImageRejected) as caught:
        inspect_image(data, filename, **{**LIMITS, **limits})
    return caught.value


# -- accepted ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "mode", "content_type", "ext"),
    [
        ("PNG", "RGB", "image/png", "png"),
        ("PNG", "RGBA", "image/png", "png"),
        ("PNG", "L", "image/png", "png"),
        ("JPEG", "RGB", "image/jpeg", "jpg"),
        ("JPEG", "L", "image/jpeg", "jpg"),
        ("WEBP", "RGB", "image/webp", "webp"),
        ("WEBP", "RGBA", "image/webp", "webp"),
    ],
)
def test_real_images_accepted(fmt: str, mode: str, content_type: str, ext: str) -> None:
    data = encode(fmt, (321, 123), mode)
    info = inspect_image(data, f"picture.{ext}", **LIMITS)
    assert info == ImageInfo(
        content_type=content_type,
        ext=ext,
        width=321,
        height=123,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def test_type_comes_from_content_not_name() -> None:
    jpeg = encode("JPEG")
    info = inspect_image(jpeg, "actually-a-jpeg.png", **LIMITS)
    assert (info.content_type, info.ext) == ("image/jpeg", "jpg")
    assert inspect_image(jpeg, None, **LIMITS).content_type == "image/jpeg"
    assert inspect_image(encode("WEBP"), "no-extension", **LIMITS).ext == "webp"


def test_exif_rotation_reports_displayed_size() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    data = encode("JPEG", (40, 20), exif=exif.tobytes())
    info = inspect_image(data, "phone.jpg", **LIMITS)
    assert (info.width, info.height) == (20, 40)


def test_multi_picture_jpeg_from_cameras_accepted() -> None:
    out = io.BytesIO()
    first, second = Image.new("RGB", (50, 30), "red"), Image.new("RGB", (50, 30), "blue")
    first.save(out, "MPO", save_all=True, append_images=[second])
    data = out.getvalue()
    with Image.open(io.BytesIO(data)) as probe:
        assert probe.format == "MPO" and probe.n_frames == 2
    info = inspect_image(data, "camera.jpg", **LIMITS)
    assert (info.content_type, info.ext, info.width, info.height) == ("image/jpeg", "jpg", 50, 30)


def test_exactly_at_the_limits_accepted() -> None:
    data = encode("PNG", (100, 50))
    info = inspect_image(data, "edge.png", max_bytes=len(data), max_pixels=5000)
    assert info.size == len(data)


def test_input_key_is_content_addressed() -> None:
    data = encode("PNG")
    info = inspect_image(data, "a.png", **LIMITS)
    sha = hashlib.sha256(data).hexdigest()
    assert input_key(info) == f"inputs/{sha[:2]}/{sha}.png"
    assert validate_key(input_key(info)) == input_key(info)
    assert input_key(inspect_image(data, "renamed.jpg", **LIMITS)) == input_key(info)


# -- rejected ---------------------------------------------------------------------------------------------


def test_text_file_rejected() -> None:
    err = reject(b"hello, this is not a picture\n", "file.txt")
    assert err.message == "file.txt is not an image (PNG, JPEG or WEBP expected)"
    assert err.reason == "is not an image (PNG, JPEG or WEBP expected)"
    assert err.field == "file" and str(err) == err.message


def test_wrong_extension_with_non_image_content_rejected() -> None:
    err = reject(b"<html><body>hi</body></html>", "photo.jpg")
    assert err.message == "photo.jpg is not an image (PNG, JPEG or WEBP expected)"
    err = reject(b"%PDF-1.7\n" + b"0" * 100, "scan.png")
    assert "not an image" in err.message


def test_zero_bytes_rejected() -> None:
    assert reject(b"", "empty.png").message == "empty.png is empty"


def test_over_size_rejected_before_decoding() -> None:
    data = encode("PNG", (200, 200), noise=True)
    err = reject(data, "big.png", max_bytes=1000)
    assert err.message.startswith("big.png is too large (")
    assert "the limit is 1000 bytes" in err.message
    assert "the limit is 20 MB" in reject(b"x" * (20 * MB + 1), "huge.png").message


def test_truncated_png_rejected() -> None:
    data = encode("PNG", (128, 128), noise=True)
    with Image.open(io.BytesIO(data[: len(data) // 2])) as img:
        assert img.size == (128, 128)  # the header alone looks fine: only a full decode notices
    err = reject(data[: len(data) // 2], "cut.png")
    assert err.message == "cut.png is damaged or truncated and cannot be read as an image"


def test_truncated_jpeg_and_webp_rejected() -> None:
    for fmt in ("JPEG", "WEBP"):
        data = encode(fmt, (256, 256), noise=True)
        err = reject(data[: len(data) // 2], "cut.img")
        assert err.message == "cut.img is damaged or truncated and cannot be read as an image"


def test_header_only_png_rejected() -> None:
    assert reject(b"\x89PNG\r\n\x1a\n", "stub.png").message.endswith(
        "is damaged or truncated and cannot be read as an image"
    )


def test_decompression_bomb_rejected_before_decoding() -> None:
    # 8000 x 8000 one-bit pixels of zeros: a 8 KB file that decodes to 64 megapixels.
    rows = (b"\x00" + b"\x00" * 1000) * 8000
    bomb = crafted_png(8000, 8000, zlib.compress(rows, 9))
    assert len(bomb) < 20_000
    # Refused from the header (see the next test: garbage pixel data gives the same answer).
    err = reject(bomb, "bomb.png")
    assert err.message == "bomb.png is 8000x8000 pixels (64 megapixels); the limit is 40 megapixels"


def test_header_is_checked_before_pixel_data() -> None:
    # The pixel data is garbage: had it been decoded, the error would be "damaged".
    err = reject(crafted_png(7000, 7000, b"not zlib at all"), "liar.png")
    assert "7000x7000 pixels" in err.message


def test_giant_declared_size_rejected_even_with_a_generous_limit() -> None:
    # 30000 x 30000 passes Pillow's own bomb threshold; no configured limit may open that door.
    bomb = crafted_png(30000, 30000, zlib.compress(b"\x00" * 3751 * 100))
    for max_pixels in (40_000_000, 10**12):
        err = reject(bomb, "giant.png", max_pixels=max_pixels)
        limit = f"{min(max_pixels, Image.MAX_IMAGE_PIXELS) / 1_000_000:.1f}".removesuffix(".0")
        assert err.message == f"giant.png declares more pixels than allowed (the limit is {limit} megapixels)"


def test_pixel_limit_and_side_limit() -> None:
    data = encode("PNG", (300, 200))
    err = reject(data, "wide.png", max_pixels=50_000)
    assert err.message == "wide.png is 300x200 pixels (0.1 megapixels); the limit is 0.1 megapixels"
    strip = encode("PNG", (17000, 1), mode="L")
    assert reject(strip, "strip.png").message == (
        "strip.png is 17000x1 pixels; neither side may be longer than 16384 pixels"
    )


def test_animated_images_rejected() -> None:
    frames = [Image.new("RGB", (20, 20), c) for c in ("red", "green", "blue")]
    for fmt in ("PNG", "WEBP"):
        out = io.BytesIO()
        frames[0].save(out, fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
        err = reject(out.getvalue(), f"anim.{fmt.lower()}")
        assert err.message == f"anim.{fmt.lower()} is animated (3 frames); a still image is expected"


def test_gif_and_other_formats_rejected() -> None:
    gif = _gif()
    assert reject(gif, "cat.gif").message == "cat.gif is a GIF; only PNG, JPEG or WEBP images are accepted"
    for fmt in ("BMP", "TIFF"):
        assert (
            "is not an image (PNG, JPEG or WEBP expected)" in reject(encode(fmt), f"x.{fmt.lower()}").message
        )


def _gif() -> bytes:
    out = io.BytesIO()
    Image.new("P", (10, 10)).save(out, "GIF")
    return out.getvalue()


def test_file_name_in_messages_is_tidy() -> None:
    assert reject(b"", "C:\\Users\\me\\Desktop\\x.png").message == "x.png is empty"
    assert reject(b"", "../../etc/evil\r\n.png").message == "evil.png is empty"
    assert reject(b"", None).message == "the file is empty"
    assert reject(b"", "a" * 300 + ".png").message.startswith("a" * 97 + "... is empty")


# -- thumbnails -------------------------------------------------------------------------------------------


def test_thumbnail_fits_and_is_jpeg() -> None:
    thumb = make_thumbnail(encode("PNG", (1000, 500), mode="RGBA"), max_side=256)
    assert THUMBNAIL_CONTENT_TYPE == "image/jpeg"
    with Image.open(io.BytesIO(thumb)) as img:
        assert img.format == "JPEG" and img.size == (256, 128) and img.mode == "RGB"


def test_thumbnail_of_transparent_image_is_on_white() -> None:
    thumb = make_thumbnail(_transparent_png(), max_side=32)
    with Image.open(io.BytesIO(thumb)) as img:
        r, g, b = img.convert("RGB").getpixel((16, 16))
        assert min(r, g, b) > 240


def _transparent_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(out, "PNG")
    return out.getvalue()


def test_thumbnail_upright_and_never_upscaled() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    thumb = make_thumbnail(encode("JPEG", (80, 40), exif=exif.tobytes()), max_side=256)
    with Image.open(io.BytesIO(thumb)) as img:
        assert img.size == (40, 80)


def test_thumbnail_rejects_non_images_and_bombs() -> None:
    with pytest.raises(ImageRejected):
        make_thumbnail(b"not an image")
    with pytest.raises(ImageRejected):
        make_thumbnail(crafted_png(8000, 8000, zlib.compress(b"\x00" * 1001 * 8000)))
