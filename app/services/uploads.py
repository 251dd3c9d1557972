"""Storing uploaded inputs: the record and the object together, or neither.

Two ways in. Multipart (POST /api/v1/uploads): the bytes pass through the web process and
`store_uploads` keeps them. Direct (POST /api/v1/uploads/presign, then .../complete): the client PUTs
each file straight to storage under a staging key `uploads/{user_id}/{random}/{name}` that only a
presigned URL lets anyone write, and `complete_upload` checks what arrived exactly as a multipart
upload is checked, keeps it through `store_uploads` (so it lands under the same content-addressed
`inputs/...` key, with the same Asset record) and removes the staging object.

The staging key carries what complete needs, so nothing is remembered in between: the owner (a
user completes only keys under their own id, and only presign writes there) and the name given at
presign time (base64url, at most STAGED_NAME_BYTES bytes of UTF-8). A short Redis note of which
asset a staging key became makes a second complete answer the same asset; if Redis lost it, the
second complete is refused as "nothing uploaded" and changes nothing.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from app.config import settings
from app.coordination import PREFIX, redis_client
from app.db import db
from app.images import ImageInfo, ImageRejected, clean_filename, input_key, inspect_image
from app.models import Asset
from app.storage import MAX_KEY_LENGTH, NotFound, Storage
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


# --- direct uploads: presigned PUT, then complete -----------------------------------------------

STAGING_PREFIX = "uploads/"
MAX_PRESIGN_FILES = 1000
# Each key is read whole (up to MAX_UPLOAD_BYTES) and checked in the request: a bounded batch.
MAX_COMPLETE_KEYS = 100
# Content type -> extension of a name that has none.
UPLOAD_CONTENT_TYPES = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
# 180 bytes of name are 240 base64 characters: one key segment stays under 255.
STAGED_NAME_BYTES = 180
# How long a completed staging key still answers with its asset.
COMPLETED_MEMO_S = 24 * 3600
# Staging objects that nobody completed (a closed tab) are removed after this long (retention sweep).
STALE_UPLOAD_S = 24 * 3600
_STAGING_KEY = re.compile(r"uploads/([0-9]{1,18})/([A-Za-z0-9_-]{22})/([A-Za-z0-9_-]{1,255})")


@dataclass(frozen=True)
class PresignedUpload:
    name: str
    key: str
    url: str
    headers: dict[str, str]
    expires_at: datetime


@dataclass(frozen=True)
class Rejection:
    key: str
    name: str | None
    code: str  # not_found | too_large | invalid_image
    error: str


def _fit(name: str, limit: int) -> str:
    """`name` cut to `limit` bytes of UTF-8, keeping a short extension."""
    if len(name.encode()) <= limit:
        return name
    stem, dot, ext = name.rpartition(".")
    tail = dot + ext if dot and 0 < len(ext) <= 16 else ""
    if not tail:
        stem = name
    room = limit - len(tail.encode())
    cut = stem.encode()[:room].decode(errors="ignore").rstrip(". ")
    return (cut + tail) if cut else tail.lstrip(".") or "upload"


def upload_name(name: object, content_type: str) -> str:
    """The name kept for a presigned upload: cleaned as multipart names are, short enough for a key."""
    kept = clean_filename(name if isinstance(name, str) else None)
    return _fit(kept or f"upload.{UPLOAD_CONTENT_TYPES[content_type]}", STAGED_NAME_BYTES)


def staging_key(user_id: int, name: str) -> str:
    encoded = base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")
    return f"{STAGING_PREFIX}{user_id}/{secrets.token_urlsafe(16)}/{encoded}"


def parse_staging_key(key: object) -> tuple[int, str] | None:
    """(owner's user id, name) of a key that presign makes, else None."""
    if not isinstance(key, str) or len(key) > MAX_KEY_LENGTH:
        return None
    match = _STAGING_KEY.fullmatch(key)
    if not match:
        return None
    raw = match.group(3)
    try:
        name = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return int(match.group(1)), name


def presign_uploads(
    files: list[tuple[str, int, str]], user_id: int, expires_s: int, store: Storage | None = None
) -> list[PresignedUpload]:
    """One presigned PUT per (name, size, content type), checked by the caller, in order.

    The URL binds the key, the Content-Type and the exact size, until `expires_s` from now.
    """
    store = store or get_storage()
    expires_at = datetime.fromtimestamp(int(time.time()) + expires_s, UTC)
    out = []
    for name, size, content_type in files:
        kept = upload_name(name, content_type)
        key = staging_key(user_id, kept)
        url = store.signed_url(
            key, expires_s=expires_s, method="PUT", content_type=content_type, content_length=size
        )
        out.append(PresignedUpload(kept, key, url, {"Content-Type": content_type}, expires_at))
    return out


def _memo_key(key: str) -> str:
    return f"{PREFIX}:upload-done:{key}"


def _remember(key: str, asset_key: str) -> None:
    try:
        redis_client(settings().broker_url).set(_memo_key(key), asset_key, ex=COMPLETED_MEMO_S)
    except Exception as exc:  # noqa: BLE001 - only a repeated complete needs it; the asset is recorded
        log.warning("could not note that %s became %s: %s", key, asset_key, exc)


def _recalled(key: str) -> Asset | None:
    try:
        asset_key = redis_client(settings().broker_url).get(_memo_key(key))
    except Exception as exc:  # noqa: BLE001 - without the note the key is answered as not uploaded
        log.warning("could not look up upload %s: %s", key, exc)
        return None
    return db.session.get(Asset, asset_key.decode()) if asset_key else None


def _not_uploaded(key: str, name: str) -> Rejection:
    return Rejection(key, name, "not_found", f"nothing was uploaded for {name} (or it was completed already)")


def complete_upload(key: str, user_id: int) -> Asset | Rejection:
    """Check and keep what was PUT to a staging key of `user_id` (the caller checked it is theirs).

    Anything that is not an acceptable image is deleted from storage and answered as a Rejection.
    """
    parsed = parse_staging_key(key)
    if parsed is None or parsed[0] != user_id:
        raise ValueError(f"{key!r} is not a staging key of user {user_id}")
    name = parsed[1]
    s = settings()
    store = get_storage()
    info = store.head(key)
    if info is None:
        return _recalled(key) or _not_uploaded(key, name)
    if info.size > s.max_upload_bytes:
        # Never read: a presigned URL binds the size, so only a misbehaving store lets this through.
        store.delete(key)
        limit_mb = s.max_upload_bytes / 1024 / 1024
        message = f"{name} is too large ({info.size} bytes; the limit is {limit_mb:.1f} MB)"
        return Rejection(key, name, "too_large", message)
    try:
        data = store.get_bytes(key)
    except NotFound:
        # A complete of the same key running alongside kept it a moment ago.
        return _recalled(key) or _not_uploaded(key, name)
    try:
        checked = inspect_image(data, name, s.max_upload_bytes, s.max_image_pixels)
    except ImageRejected as exc:
        store.delete(key)
        return Rejection(key, name, "invalid_image", exc.message)
    asset = store_uploads([Upload(name, data, checked)], user_id)[0]
    _remember(key, asset.key)
    store.delete(key)
    return asset


def sweep_stale_uploads(store: Storage, older_than: datetime, limit: int = 1000) -> int:
    """Remove staging objects nobody completed before `older_than`; returns how many."""
    removed = 0
    cursor = None
    while removed < limit:
        objects, cursor = store.list(prefix=STAGING_PREFIX, cursor=cursor, limit=min(1000, limit))
        for obj in objects:
            if obj.modified < older_than and removed < limit:
                store.delete(obj.key)
                removed += 1
        if cursor is None:
            break
    return removed
