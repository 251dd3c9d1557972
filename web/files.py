"""Serves the local storage backend's signed URLs (S3 serves its own): GET for downloads and
workers' inputs, PUT for workers' outputs (storage grants, app/services/grants.py) and for browser
uploads (POST /api/v1/uploads/presign, app/services/uploads.py)."""

from __future__ import annotations

from flask import Blueprint, Response, abort, request, send_file

from app.storage import InvalidKey, LocalStorage
from app.storage_factory import get_storage

bp = Blueprint("files", __name__)
# A signed PUT carries one object; S3's own limit for a single PUT.
MAX_PUT_BYTES = 5 * 1024**3


def _local() -> LocalStorage:
    store = get_storage()
    if not isinstance(store, LocalStorage):
        abort(404)
    return store


@bp.get("/files/<path:key>")
def serve(key: str) -> Response:
    store = _local()
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


@bp.put("/files/<path:key>")
def upload(key: str) -> tuple[str, int]:
    store = _local()
    content_type = request.args.get("content_type")
    length = request.args.get("length")
    try:
        ok = store.verify_signature(
            key,
            "PUT",
            request.args.get("exp", ""),
            request.args.get("sig", ""),
            content_type=content_type,
            content_length=length,
        )
    except (InvalidKey, ValueError):
        ok = False
    # As S3: a URL signed for a Content-Type accepts only that Content-Type, and one signed for a
    # length (browser uploads, app/services/uploads.py) only a body of exactly that length.
    if not ok or (content_type is not None and request.mimetype != content_type.split(";")[0].strip()):
        abort(403)
    # The body is then read up to its Content-Length and no further.
    if length is not None and request.content_length != int(length):
        abort(403)
    request.max_content_length = MAX_PUT_BYTES
    store.put_stream(key, request.stream, content_type or request.mimetype or "application/octet-stream")
    return "", 200
