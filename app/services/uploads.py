"""Storing uploaded inputs: the record and the object together, or neither."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from app.db import db
from app.images import ImageInfo, clean_filename, input_key
from app.models import Asset
from app.storage_factory import get_storage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Upload:
    filename: str | None  # as sent; cleaned before it is kept
    data: bytes
    info: ImageInfo


def kept_name(upload: Upload) -> str:
    """The name shown and used in zips: the sent one cleaned (app/images.py), else a made-up one."""
    return clean_filename(upload.filename) or f"upload.{upload.info.ext}"


def store_uploads(uploads: list[Upload], user_id: int | None) -> list[Asset]:
    """Record and store checked images (content-addressed: the same bytes are kept once, under the
    name they were first uploaded with), and commit. Returns one Asset per upload, in order.

    The records are written first, so one the database refuses stores nothing. If storing or the
    commit fails after that, the objects this call created are deleted again before the error goes
    on: a failed upload never leaves an object without a record.
    """
    keys = [input_key(u.info) for u in uploads]
    rows: dict[str, dict] = {}
    for key, upload in zip(keys, uploads, strict=True):
        rows.setdefault(
            key,
            {
                "key": key,
                "filename": kept_name(upload),
                "size": upload.info.size,
                "content_type": upload.info.content_type,
                "width": upload.info.width,
                "height": upload.info.height,
                "sha256": upload.info.sha256,
                "uploaded_by": user_id,
            },
        )
    dialect = postgresql if db.session.get_bind().dialect.name == "postgresql" else sqlite
    # An asset someone already recorded (or is recording now: the insert waits for them) is kept as is.
    db.session.execute(
        dialect.insert(Asset).values(list(rows.values())).on_conflict_do_nothing(index_elements=["key"])
    )
    store = get_storage()
    created: list[str] = []
    try:
        for key, upload in zip(keys, uploads, strict=True):
            if key not in created and not store.exists(key):
                store.put_bytes(key, upload.data, upload.info.content_type)
                created.append(key)
        db.session.commit()
    except BaseException:
        _remove(created)
        db.session.rollback()
        raise
    assets = {a.key: a for a in db.session.scalars(select(Asset).where(Asset.key.in_(list(rows))))}
    return [assets[key] for key in keys]


def _remove(keys: list[str]) -> None:
    store = get_storage()
    for key in keys:
        try:
            store.delete(key)
        except Exception as exc:  # noqa: BLE001 - the original error matters more; this one is logged
            log.error("could not remove %s after a failed upload: %s", key, exc)
