"""Stream a zip of stored objects without holding it in memory."""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator

from app.images import clean_filename
from app.storage import Storage

CHUNK = 1024 * 1024
# Characters some systems refuse in a file name when the archive is unpacked (Windows above all).
_UNSAFE = re.compile(r'[<>:"/\\|?*]')


def item_folder(idx: int, item_id: str, input_name: str | None) -> str:
    """An item's folder in a job's zip: its position, then its input's upload name without the
    extension (cleaned again: names recorded before uploads were cleaned may hold anything), or the
    item id where there is no name."""
    stem = (clean_filename(input_name) or "").rsplit(".", 1)[0]
    stem = _UNSAFE.sub("_", stem)[:60].strip(". ")
    return f"{idx:05d}-{stem or item_id[:8]}"


class _Pipe:
    """A write-only file whose written bytes are drained by the generator."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.offset = 0

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        self.offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self.offset

    def flush(self) -> None:
        return None

    def drain(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        return data


def zip_outputs(store: Storage, entries: list[tuple[str, str]]) -> Iterator[bytes]:
    """Yield a zip of (name in archive, storage key). Media is already compressed: store it."""
    pipe = _Pipe()
    with zipfile.ZipFile(pipe, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:  # type: ignore[arg-type]
        for name, key in entries:
            with store.open_stream(key) as src, archive.open(name, mode="w", force_zip64=True) as dst:
                while block := src.read(CHUNK):
                    dst.write(block)
                    if pipe.chunks:
                        yield pipe.drain()
            yield pipe.drain()
    yield pipe.drain()
