"""A job's results as one zip, streamed as it is written: each result named after its input
(`cat.jpg` gives `cat.mp4`, `cat.poster.png`, `cat.masks/dog.png`), and a `manifest.csv` with a row
per item. Nothing holds the whole zip, nor every item of a large job, in memory."""

from __future__ import annotations

import csv
import re
import tempfile
import time
import zipfile
from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import select, tuple_

from app.db import db
from app.images import clean_filename
from app.models import Asset, Item
from app.storage import NotFound, Storage

CHUNK = 1024 * 1024
MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = (
    "index",
    "item_id",
    "input",
    "input_key",
    "prompt",
    "status",
    "attempt",
    "outputs",
    "error",
    "cost_usd",
)
# Items read per query: a job of 10^5 items is read a batch at a time, never all at once.
BATCH = 500
# Most items one download may name (a longer list does not fit in a request URI anyway).
MAX_SELECTED = 10_000
# The manifest is written while the results stream, and added last; past this size it waits on disk.
MANIFEST_IN_MEMORY = 4 * 1024 * 1024
# Longest file-name stem taken from an input's name, so that suffixes still fit in 255 bytes.
MAX_STEM_CHARS = 120

# Roles that are the result itself: the first of them takes the input's name with its own extension.
MAIN_ROLES = ("video", "echo", "image")
# Roles "<prefix><name>" of which an item may have many: they go into a folder "<stem>.<folder>/".
GROUPED_ROLES = {"mask_": "masks"}

# Characters some systems refuse in a file name when the archive is unpacked (Windows above all).
_UNSAFE = re.compile(r'[<>:"/\\|?*\x00-\x1f]')
_ITEM_ID = re.compile(r"[A-Za-z0-9-]{1,64}")
_EXTENSION = re.compile(r"[A-Za-z0-9]{1,8}")
# Names Windows keeps for devices, whatever their extension ("con.mp4" cannot be created).
_RESERVED = {
    "CON",
    "PRN",
    "AUX",
    "NUL",
    *(f"COM{i}" for i in range(1, 10)),
    *(f"LPT{i}" for i in range(1, 10)),
}

_COLUMNS = (
    Item.id,
    Item.idx,
    Item.input_key,
    Item.prompt,
    Item.prompts,
    Item.status,
    Item.attempt,
    Item.outputs,
    Item.error,
    Item.cost_usd,
    Asset.filename,
)


# --- names --------------------------------------------------------------------------------


def _safe_part(text: str) -> str:
    return _UNSAFE.sub("_", text).strip(". ")


def input_name(filename: str | None, input_key: str) -> str:
    """The input's original name: its upload's, else the last part of its key."""
    return filename or input_key.rsplit("/", 1)[-1]


def input_stem(name: str, fallback: str) -> str:
    """A file-name stem from an input's name: without its extension, cleaned again (names recorded
    before uploads were cleaned may hold anything), safe to unpack on any system."""
    cleaned = clean_filename(name) or ""
    stem = cleaned.rsplit(".", 1)[0] if "." in cleaned.strip(".") else cleaned
    stem = _safe_part(stem)[:MAX_STEM_CHARS].strip(". ") or fallback
    if stem.split(".", 1)[0].strip().upper() in _RESERVED:
        stem = "_" + stem
    return stem


def output_names(stem: str, outputs: list[dict[str, Any]]) -> list[str]:
    """Zip entry names of one item's outputs, in their order: the main result `stem.ext`, each grouped
    role `stem.<folder>/<name>.ext`, any other `stem.<role>.ext`."""
    names: list[str] = []
    seen: set[str] = set()
    main_taken = False
    for output in outputs:
        tail = str(output.get("key") or "").rsplit("/", 1)[-1]
        base, dot, ext = tail.rpartition(".")
        if not dot or not _EXTENSION.fullmatch(ext):
            base, ext = tail, ""
        ext = f".{ext.lower()}" if ext else ""
        # Roles come from workers, which are not trusted: nothing in one may reach outside its name.
        role = _safe_part(str(output.get("role") or base)) or "output"
        if not main_taken and role in MAIN_ROLES:
            main_taken = True
            name = f"{stem}{ext}"
        else:
            name = next(
                (
                    f"{stem}.{folder}/{_safe_part(role[len(prefix) :]) or 'output'}{ext}"
                    for prefix, folder in GROUPED_ROLES.items()
                    if role.startswith(prefix) and len(role) > len(prefix)
                ),
                f"{stem}.{role}{ext}",
            )
        unique, n = name, 2
        while unique.casefold() in seen:
            unique = f"{name[: len(name) - len(ext)]}-{n}{ext}" if ext else f"{name}-{n}"
            n += 1
        seen.add(unique.casefold())
        names.append(unique)
    return names


def _claims(name: str) -> list[str]:
    """What an entry occupies when unpacked: its path and each folder above it (case-insensitively,
    as on Windows and macOS)."""
    parts = name.casefold().split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


class ZipNames:
    """Names for the items of one zip, in item order: every item's stem differs from every other's
    and no two entries meet, even on a case-insensitive file system; a name met again gets " (2)",
    " (3)", ... so the same items always get the same names."""

    def __init__(self, reserved: Iterable[str] = (MANIFEST,)) -> None:
        self.used: set[str] = set()
        for name in reserved:
            self.used.update(_claims(name))

    def item(self, stem: str, outputs: list[dict[str, Any]]) -> list[str]:
        n = 1
        while True:
            candidate = stem if n == 1 else f"{stem} ({n})"
            names = output_names(candidate, outputs)
            claims = {candidate.casefold(), *(c for name in names for c in _claims(name))}
            if not claims & self.used:
                self.used.update(claims)
                return names
            n += 1


# --- rows ---------------------------------------------------------------------------------


class SelectionError(ValueError):
    """The `items` of a download name no item, too many, or items the job does not have."""


def selected_ids(job_id: str, values: list[str]) -> list[str]:
    """The item ids of `items=a,b` / `items=a&items=b`, checked to be the job's, in item order."""
    wanted: list[str] = []
    for value in values:
        wanted += [v.strip() for v in value.split(",") if v.strip()]
    wanted = list(dict.fromkeys(wanted))
    if not wanted:
        raise SelectionError("items names no item: give item ids, comma-separated")
    if len(wanted) > MAX_SELECTED:
        raise SelectionError(f"items names {len(wanted)} items; at most {MAX_SELECTED} at once")
    found: list[tuple[int, str]] = []
    # What cannot be an id is not looked up (a NUL, say, is more than some databases take in a query).
    lookup = [v for v in wanted if _ITEM_ID.fullmatch(v)]
    for start in range(0, len(lookup), BATCH):
        chunk = lookup[start : start + BATCH]
        found += db.session.execute(
            select(Item.idx, Item.id).where(Item.job_id == job_id, Item.id.in_(chunk))
        ).all()
    unknown = set(wanted) - {item_id for _, item_id in found}
    if unknown:
        shown = ", ".join(sorted(unknown)[:5]) + (" ..." if len(unknown) > 5 else "")
        raise SelectionError(f"items: job {job_id} has no item {shown}")
    return [item_id for _, item_id in sorted(found)]


def job_rows(job_id: str, item_ids: list[str] | None = None) -> Iterator[Any]:
    """The job's items (or those of `item_ids`, in item order) with their input's upload name, as
    rows of plain columns, a batch per query; the session is released between batches, so a long
    download holds no transaction open."""
    base = select(*_COLUMNS).outerjoin(Asset, Asset.key == Item.input_key).where(Item.job_id == job_id)
    order = (Item.idx, Item.id)
    if item_ids is not None:
        for start in range(0, len(item_ids), BATCH):
            rows = db.session.execute(
                base.where(Item.id.in_(item_ids[start : start + BATCH])).order_by(*order)
            )
            batch = rows.all()
            db.session.commit()
            yield from batch
        return
    after: tuple[int, str] | None = None
    while True:
        query = base if after is None else base.where(tuple_(*order) > tuple_(*after))
        batch = db.session.execute(query.order_by(*order).limit(BATCH)).all()
        db.session.commit()
        yield from batch
        if len(batch) < BATCH:
            return
        after = (batch[-1].idx, batch[-1].id)


# --- the zip ------------------------------------------------------------------------------


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


def _prompt(row: Any, job_prompt: str | None, job_prompts: list[str] | None) -> str:
    prompt = row.prompt if row.prompt is not None else job_prompt
    if prompt:
        return prompt
    concepts = row.prompts if row.prompts is not None else job_prompts
    return "; ".join(concepts or [])


def zip_job(
    store: Storage,
    rows: Iterable[Any],
    job_prompt: str | None = None,
    job_prompts: list[str] | None = None,
) -> Iterator[bytes]:
    """Yield a zip of the rows' outputs (rows of `job_rows`), named after their inputs, then
    `manifest.csv`: one row per item, whatever its status. Media is already compressed: stored."""
    pipe = _Pipe()
    names = ZipNames()
    with (
        tempfile.SpooledTemporaryFile(
            MANIFEST_IN_MEMORY, mode="w+", encoding="utf-8", newline=""
        ) as manifest,
        zipfile.ZipFile(pipe, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive,  # type: ignore[arg-type]
    ):
        writer = csv.writer(manifest)
        writer.writerow(MANIFEST_COLUMNS)
        for row in rows:
            name = input_name(row.filename, row.input_key)
            outputs = list(row.outputs or [])
            written: list[str] = []
            missing: list[str] = []
            for entry, output in zip(names.item(input_stem(name, row.id[:8]), outputs), outputs, strict=True):
                try:
                    src = store.open_stream(output["key"])
                except NotFound:
                    # Gone from storage (removed by hand, or by retention meanwhile): the rest still comes.
                    missing.append(entry)
                    continue
                with src, archive.open(entry, mode="w", force_zip64=True) as dst:
                    while block := src.read(CHUNK):
                        dst.write(block)
                        if pipe.chunks:
                            yield pipe.drain()
                written.append(entry)
                if pipe.chunks:
                    yield pipe.drain()
            error = row.error or ""
            if missing:
                error = "; ".join(filter(None, [error, f"missing from storage: {', '.join(missing)}"]))
            writer.writerow(
                [
                    row.idx,
                    row.id,
                    name,
                    row.input_key,
                    _prompt(row, job_prompt, job_prompts),
                    row.status,
                    row.attempt,
                    ";".join(written),
                    error,
                    "" if row.cost_usd is None else round(row.cost_usd, 6),
                ]
            )
        manifest.seek(0)
        info = zipfile.ZipInfo(MANIFEST, date_time=time.localtime()[:6])
        info.compress_type = zipfile.ZIP_DEFLATED
        with archive.open(info, mode="w", force_zip64=True) as dst:
            # A byte-order mark: spreadsheet programs read the file as UTF-8 only with it.
            dst.write("\ufeff".encode())
            while text := manifest.read(CHUNK):
                dst.write(text.encode())
                if pipe.chunks:
                    yield pipe.drain()
    if pipe.chunks:
        yield pipe.drain()
