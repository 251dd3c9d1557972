"""Names of result files: after their input, never two alike, never one already on disk."""

from __future__ import annotations

import mimetypes
import re
from pathlib import Path, PurePosixPath
from typing import Any

CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}
# Path separators, control characters and what Windows does not allow in a file name.
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')


def content_type_for(name: str) -> str:
    suffix = PurePosixPath(name).suffix.lower()
    return CONTENT_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def safe_part(text: str, limit: int = 100) -> str:
    return _UNSAFE.sub("_", text).strip(" .")[:limit]


def stem_of(source: str) -> str:
    """`photos/cat.jpg` -> `cat`; a name made safe to use as a file name (never empty)."""
    name = PurePosixPath(source.replace("\\", "/")).name
    return safe_part(PurePosixPath(name).stem if "." in name.lstrip(".") else name) or "item"


def extension_of(output: dict[str, Any]) -> str:
    """An output's extension: from its storage key (`.../video.mp4`), else from its content type."""
    name = PurePosixPath(str(output.get("key") or "")).name
    suffix = PurePosixPath(name).suffix
    if suffix and re.fullmatch(r"\.[A-Za-z0-9]{1,10}", suffix):
        return suffix.lower()
    guessed = mimetypes.guess_extension(output.get("content_type") or "")
    return guessed or ""


class OutputNamer:
    """Chooses the file names of each item's outputs in `dest`.

    The first output is `<input stem><ext>` (`cat.jpg` -> `cat.mp4`); each further output of the
    same item adds its role (`cat.poster.png`). When any of an item's names is taken -- by an earlier
    item of this run (two inputs called `cat`) or by a file already in `dest` -- the whole set moves
    to `cat-2`, then `cat-3`, ..., so an item's files keep one stem. Names are compared without case,
    as macOS and Windows file systems do."""

    def __init__(self, dest: Path | None = None) -> None:
        self.dest = dest
        self.taken: set[str] = set()
        if dest is not None and dest.is_dir():
            self.taken = {p.name.lower() for p in dest.iterdir()}

    def reserve(self, source: str, outputs: list[dict[str, Any]]) -> list[str]:
        stem = stem_of(source)
        tails = []
        for i, output in enumerate(outputs):
            role = safe_part(str(output.get("role") or ""), 40) if i else ""
            tail = (f".{role}" if role else f".{i + 1}" if i else "") + extension_of(output)
            if tail in tails:  # two outputs alike in role and type
                tail = f".{i + 1}{tail}"
            tails.append(tail)
        n = 1
        while True:
            base = stem if n == 1 else f"{stem}-{n}"
            names = [base + tail for tail in tails]
            if not any(name.lower() in self.taken for name in names):
                self.taken.update(name.lower() for name in names)
                return names
            n += 1
