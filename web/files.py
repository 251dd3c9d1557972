"""Serves the local storage backend's signed URLs (S3 serves its own)."""

from __future__ import annotations

from flask import Blueprint, Response, abort, request, send_file

from app.storage import InvalidKey, LocalStorage
from app.storage_factory import get_storage

bp = Blueprint("files", __name__)


@bp.get("/files/<path:key>")
def serve(key: str) -> Response:
    store = get_storage()
    if not isinstance(store, LocalStorage):
        abort(404)
    exp = request.args.get("exp", "")
    sig = request.args.get("sig", "")
    filename = request.args.get("filename")
    try:
        ok = store.verify_signature(key, "GET", exp, sig, filename=filename)
    except (InvalidKey, ValueError):
        ok = False
    if not ok:
        abort(403)
    info = store.head(key)
    if info is None:
        abort(404)
    return send_file(
        store.open_stream(key),
        mimetype=info.content_type or "application/octet-stream",
        as_attachment=bool(filename),
        download_name=filename or key.rsplit("/", 1)[-1],
        conditional=False,
        max_age=0,
    )
