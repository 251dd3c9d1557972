"""Checks on uploaded input images, before anything is stored or queued.

The type comes from the bytes, never from the file name. Pillow only gets to try the PNG, JPEG and
WEBP decoders (no EPS/PSD/TIFF plugins on untrusted input), the pixel count is checked from the header
before any pixel is decoded, and then the whole image is decoded once so that truncated or corrupt
files are refused here rather than failing a GPU job later.

Choices:
- GIF is refused: the providers (WAN image-to-video, SAM3, Runway) take one still image, and Runway
  does not accept GIF.
- Animated PNG/WEBP are refused rather than silently cut to their first frame: the person would get a
  result for a frame they may not have meant.
- Multi-picture JPEG (MPO, what many phone cameras write) is accepted as JPEG: its extra frames are a
  preview or depth map, and the first frame is the photo.
- width and height are as displayed, i.e. after the EXIF orientation is applied.
"""

from __future__ import annotations

import hashlib
import io
import unicodedata
from dataclasses import dataclass

from PIL import Image, ImageOps

ALLOWED = "PNG, JPEG or WEBP"
# WEBP's own limit; a longer side is a strip no model wants and a cheap way to make a huge canvas.
DEFAULT_MAX_SIDE = 16384
DEFAULT_MAX_PIXELS = 40_000_000
THUMBNAIL_CONTENT_TYPE = "image/jpeg"

# Pillow format name -> (content type, extension)
_FORMATS = {
    "PNG": ("image/png", "png"),
    "JPEG": ("image/jpeg", "jpg"),
    "MPO": ("image/jpeg", "jpg"),
    "WEBP": ("image/webp", "webp"),
}
# Only these plugins may look at untrusted bytes; MPO is produced by the JPEG plugin.
_OPEN_FORMATS = ("PNG", "JPEG", "WEBP")
_EXIF_ORIENTATION = 0x0112
_DAMAGED = "is damaged or truncated and cannot be read as an image"


def _looks_like_allowed(data: bytes) -> bool:
    """Starts like PNG, JPEG or WEBP: a failure to open it then means a broken file, not a wrong type."""
    return (
        data.startswith(b"\x89PNG\r\n\x1a\n")
        or data.startswith(b"\xff\xd8\xff")
        or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")
    )


class ImageRejected(ValueError):
    """An upload that is not an acceptable image.

    `message` is a sentence for a person and names the file; `reason` is the same without the name.
    """

    def __init__(self, field: str, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.reason = reason or message


@dataclass(frozen=True)
class ImageInfo:
    content_type: str
    ext: str
    width: int
    height: int
    size: int
    sha256: str


# Longest file name kept for an upload, in characters (the column holds 255).
MAX_FILENAME_CHARS = 200


def clean_filename(filename: str | None) -> str | None:
    """An uploaded file's name as kept for display and for the zip: the last path segment, without
    control, format (bidi overrides such as U+202E, zero-width characters) or unassigned characters,
    white space collapsed, at most MAX_FILENAME_CHARS long with its extension kept. None when nothing
    usable is left: "a", U+202E, "gnp.exe", NUL, ".png" becomes "agnp.exe.png"."""
    if not filename:
        return None
    base = unicodedata.normalize("NFC", filename).replace("\\", "/").rsplit("/", 1)[-1]
    kept = "".join(" " if c.isspace() else c for c in base if unicodedata.category(c)[0] != "C")
    name = " ".join(kept.split()).strip(". ")
    if len(name) > MAX_FILENAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 16:
            name = stem[: MAX_FILENAME_CHARS - len(ext) - 1].rstrip(". ") + "." + ext
        else:
            name = name[:MAX_FILENAME_CHARS].rstrip(". ")
    return name or None


def _display_name(filename: str | None) -> str:
    base = clean_filename(filename)
    if not base:
        return "the file"
    if len(base) > 100:
        base = base[:97] + "..."
    return base


def _human_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    value, unit = n / 1024, "KB"
    for bigger in ("MB", "GB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f}".removesuffix(".0") + f" {unit}"


def _megapixels(n: int) -> str:
    return f"{n / 1_000_000:.1f}".removesuffix(".0")


def inspect_image(
    data: bytes,
    filename: str | None,
    max_bytes: int,
    max_pixels: int,
    *,
    max_side: int = DEFAULT_MAX_SIDE,
    field: str = "file",
) -> ImageInfo:
    """Return what the bytes are, or raise ImageRejected with a message a person understands."""
    name = _display_name(filename)

    def reject(reason: str) -> ImageRejected:
        return ImageRejected(field, f"{name} {reason}", reason)

    size = len(data)
    if size == 0:
        raise reject("is empty")
    if size > max_bytes:
        raise reject(f"is too large ({_human_bytes(size)}; the limit is {_human_bytes(max_bytes)})")
    if data[:6] in (b"GIF87a", b"GIF89a"):
        raise reject(f"is a GIF; only {ALLOWED} images are accepted")

    # Pillow's own bomb threshold counts too, so a configured limit above it cannot open the door wider.
    pixel_limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
    try:
        img = Image.open(io.BytesIO(data), formats=_OPEN_FORMATS)
    except Image.DecompressionBombError:
        raise reject(
            f"declares more pixels than allowed (the limit is {_megapixels(pixel_limit)} megapixels)"
        ) from None
    except Exception:  # noqa: BLE001 - Pillow raises many types for unidentifiable or broken headers
        if _looks_like_allowed(data):
            raise reject(_DAMAGED) from None
        raise reject(f"is not an image ({ALLOWED} expected)") from None

    with img:
        fmt = img.format or ""
        if fmt not in _FORMATS:
            raise reject(f"is not an image ({ALLOWED} expected)")
        content_type, ext = _FORMATS[fmt]
        width, height = img.size
        if width <= 0 or height <= 0:
            raise reject("has no pixels")
        # Before decoding: the header alone tells how much memory decoding would take.
        if width * height > pixel_limit:
            raise reject(
                f"is {width}x{height} pixels ({_megapixels(width * height)} megapixels); "
                f"the limit is {_megapixels(pixel_limit)} megapixels"
            )
        if width > max_side or height > max_side:
            raise reject(f"is {width}x{height} pixels; neither side may be longer than {max_side} pixels")
        frames = getattr(img, "n_frames", 1)
        if fmt != "MPO" and (frames > 1 or getattr(img, "is_animated", False)):
            raise reject(f"is animated ({frames} frames); a still image is expected")
        try:
            img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise reject("declares more pixels than allowed") from None
        except Exception:  # noqa: BLE001 - truncated data surfaces as OSError, SyntaxError, ValueError, ...
            raise reject(_DAMAGED) from None
        try:
            orientation = int(img.getexif().get(_EXIF_ORIENTATION, 1))
        except Exception:  # noqa: BLE001 - a broken EXIF block does not make the pixels unusable
            orientation = 1

    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return ImageInfo(
        content_type=content_type,
        ext=ext,
        width=width,
        height=height,
        size=size,
        sha256=hashlib.sha256(data).hexdigest(),
    )


def make_thumbnail(data: bytes, max_side: int = 256, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """A JPEG (THUMBNAIL_CONTENT_TYPE) no larger than max_side on either side, upright, on white."""
    if max_side < 1:
        raise ValueError("max_side must be positive")
    try:
        img = Image.open(io.BytesIO(data), formats=_OPEN_FORMATS)
    except Exception:  # noqa: BLE001
        raise ImageRejected("file", f"not an image ({ALLOWED} expected)") from None
    with img:
        if img.width * img.height > max_pixels:
            raise ImageRejected("file", f"image is too large to thumbnail ({img.width}x{img.height} pixels)")
        # JPEG can decode at 1/2, 1/4 or 1/8 scale directly: far less work for a big photo.
        img.draft("RGB", (max_side * 2, max_side * 2))
        try:
            upright = ImageOps.exif_transpose(img)
            upright.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        except Exception:  # noqa: BLE001
            raise ImageRejected("file", "image is damaged or truncated") from None
    if upright.mode in ("RGBA", "LA", "PA") or (upright.mode == "P" and "transparency" in upright.info):
        rgba = upright.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        upright = flat
    elif upright.mode != "RGB":
        upright = upright.convert("RGB")
    out = io.BytesIO()
    upright.save(out, "JPEG", quality=85, optimize=True, progressive=True)
    return out.getvalue()


def input_key(info: ImageInfo) -> str:
    """Content-addressed, so uploading the same image twice stores it once."""
    return f"inputs/{info.sha256[:2]}/{info.sha256}.{info.ext}"


__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_SIDE",
    "MAX_FILENAME_CHARS",
    "THUMBNAIL_CONTENT_TYPE",
    "ImageInfo",
    "ImageRejected",
    "clean_filename",
    "input_key",
    "inspect_image",
    "make_thumbnail",
]
