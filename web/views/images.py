"""Browsing storage with thumbnails, and the upload area (web/static/uploads.js: straight to storage
through /api/v1/uploads/presign and /api/v1/uploads/complete)."""

from __future__ import annotations

import logging

from flask import Response, abort, redirect, render_template, request
from sqlalchemy import select

from app.config import settings
from app.db import db
from app.images import THUMBNAIL_CONTENT_TYPE, ImageRejected, make_thumbnail
from app.models import Asset
from app.storage import InvalidCursor, InvalidKey, NotFound, validate_key, validate_prefix
from app.storage_factory import get_storage
from web.views import bp

log = logging.getLogger(__name__)

PAGE_SIZE = 48
THUMB_SIDE = 256
THUMB_PREFIX = "thumbs/"
# Thumbnails are made from the stored bytes in the request: refuse to read anything huge.
THUMB_MAX_SOURCE_BYTES = 50 * 1024 * 1024


def thumb_key(key: str) -> str:
    return f"{THUMB_PREFIX}{key}.jpg"


@bp.get("/images")
def images() -> str | tuple[str, int]:
    prefix = request.args.get("prefix", "inputs/").strip()
    cursor = request.args.get("cursor") or None
    error = None
    objects = []
    next_cursor = None
    try:
        validate_prefix(prefix)
        objects, next_cursor = get_storage().list(prefix=prefix, cursor=cursor, limit=PAGE_SIZE)
    except InvalidKey as exc:
        error = f"That prefix cannot be listed: {exc}"
    except (InvalidCursor, ValueError):
        error = "That page link is no longer valid; start again from the first page."
    keys = [o.key for o in objects]
    assets = {a.key: a for a in db.session.scalars(select(Asset).where(Asset.key.in_(keys)))} if keys else {}
    cards = [
        {
            "key": o.key,
            "name": assets[o.key].filename if o.key in assets else o.key.rsplit("/", 1)[-1],
            "size": o.size,
            "content_type": o.content_type or "",
            "is_image": (o.content_type or "").startswith("image/"),
            "width": assets[o.key].width if o.key in assets else None,
            "height": assets[o.key].height if o.key in assets else None,
        }
        for o in objects
    ]
    body = render_template(
        "images.html",
        prefix=prefix,
        cursor=cursor,
        cards=cards,
        next_cursor=next_cursor,
        error=error,
        max_upload_bytes=settings().max_upload_bytes,
    )
    return (body, 400) if error else body


@bp.get("/images/thumb/<path:key>")
def thumbnail(key: str) -> Response:
    """Redirect to a signed URL of the object's thumbnail, made once and kept under thumbs/."""
    try:
        validate_key(key)
    except InvalidKey:
        abort(404)
    store = get_storage()
    target = key if key.startswith(THUMB_PREFIX) else thumb_key(key)
    asset = db.session.get(Asset, key)
    known = asset is not None and asset.thumbnail_key == target
    if not known and not store.exists(target):
        info = store.head(key)
        if info is None:
            abort(404)
        if info.size > THUMB_MAX_SOURCE_BYTES:
            abort(404, "that object is too large to preview")
        try:
            data = store.get_bytes(key)
            store.put_bytes(target, make_thumbnail(data, THUMB_SIDE), THUMBNAIL_CONTENT_TYPE)
        except NotFound:
            abort(404)
        except ImageRejected as exc:
            log.info("no thumbnail for %s: %s", key, exc.message)
            abort(404, "that object is not an image that can be previewed")
    if asset is not None and not known:
        asset.thumbnail_key = target
        db.session.commit()
    ttl = settings().signed_url_ttl_s
    response = redirect(store.signed_url(target, expires_s=ttl))
    # The browser may reuse the redirect while the signed URL it points to is still valid.
    response.headers["Cache-Control"] = f"private, max-age={max(0, min(600, ttl - 60))}"
    return response
