"""Direct-to-storage uploads: presigned PUT URLs, then a check of what arrived (routes on the API blueprint).

1. POST /api/v1/uploads/presign {"files": [{"name", "size", "content_type"}, ...]} (up to 1,000)
   answers one URL per file, in order: PUT the file's bytes there with the given headers before
   `expires_at` (the body must be exactly `size` bytes).
2. POST /api/v1/uploads/complete {"keys": [...]} (up to 100) checks each upload as multipart uploads
   are checked and keeps it as an asset; what is not an acceptable image is deleted and listed under
   `rejected`. Completing a key again answers the same asset.

The logic is in app/services/uploads.py; the OpenAPI description in web/openapi.py.
"""

from __future__ import annotations

from typing import Any

from flask import Response, g, jsonify

from app.config import settings
from app.models import Asset
from app.services import uploads
from web.api import _json_body, asset_json, bp
from web.errors import ApiError

_TYPES = ", ".join(uploads.UPLOAD_CONTENT_TYPES)
MAX_NAME_CHARS = 1024


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:.1f}".removesuffix(".0") + " MB"


def _checked_file(i: int, f: Any, max_bytes: int) -> tuple[str, int, str]:
    where = f"files[{i}]"
    if not isinstance(f, dict):
        raise ApiError(
            400, "invalid_parameter", f"{where} must be an object with name, size and content_type", where
        )
    name = f.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_CHARS:
        raise ApiError(
            400,
            "invalid_parameter",
            f"{where}.name must be the file's name (1 to {MAX_NAME_CHARS} characters)",
            f"{where}.name",
        )
    size = f.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ApiError(
            400,
            "invalid_parameter",
            f"{where}.size must be the size of {name} in bytes (at least 1)",
            f"{where}.size",
        )
    if size > max_bytes:
        raise ApiError(
            400,
            "too_large",
            f"{where}.size: {name} is {_mb(size)}; the limit is {_mb(max_bytes)} ({max_bytes} bytes)",
            f"{where}.size",
        )
    content_type = f.get("content_type")
    normal = content_type.strip().lower() if isinstance(content_type, str) else None
    if normal not in uploads.UPLOAD_CONTENT_TYPES:
        raise ApiError(
            400,
            "invalid_parameter",
            f"{where}.content_type: {name} is {content_type!r}; only {_TYPES} images are accepted",
            f"{where}.content_type",
        )
    return name, size, normal


@bp.post("/uploads/presign")
def presign_uploads() -> Response:
    body = _json_body()
    s = settings()
    files = body.get("files")
    if not isinstance(files, list) or not files or len(files) > uploads.MAX_PRESIGN_FILES:
        raise ApiError(
            400,
            "invalid_parameter",
            f"files must be a list of 1 to {uploads.MAX_PRESIGN_FILES} objects with name, size and content_type",
            "files",
        )
    expires_in = body.get("expires_in", s.upload_url_ttl_s)
    if (
        not isinstance(expires_in, int)
        or isinstance(expires_in, bool)
        or not 1 <= expires_in <= s.upload_url_ttl_s
    ):
        raise ApiError(
            400,
            "invalid_parameter",
            f"expires_in must be between 1 and {s.upload_url_ttl_s} seconds",
            "expires_in",
        )
    checked = [_checked_file(i, f, s.max_upload_bytes) for i, f in enumerate(files)]
    signed = uploads.presign_uploads(checked, g.user.id, expires_in)
    return jsonify(
        {
            "uploads": [
                {
                    "name": u.name,
                    "key": u.key,
                    "url": u.url,
                    "method": "PUT",
                    "headers": u.headers,
                    "expires_at": u.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
                for u in signed
            ]
        }
    )


@bp.post("/uploads/complete")
def complete_uploads() -> Response:
    body = _json_body()
    keys = body.get("keys")
    limit = uploads.MAX_COMPLETE_KEYS
    if not isinstance(keys, list) or not keys or len(keys) > limit:
        raise ApiError(
            400,
            "invalid_parameter",
            f"keys must be a list of 1 to {limit} keys from POST /api/v1/uploads/presign",
            "keys",
        )
    # Every key is checked before any is touched: a request naming someone else's upload does nothing.
    for i, key in enumerate(keys):
        parsed = uploads.parse_staging_key(key)
        if parsed is None:
            raise ApiError(
                400,
                "invalid_parameter",
                f"keys[{i}] is not a key from POST /api/v1/uploads/presign",
                f"keys[{i}]",
            )
        if parsed[0] != g.user.id:
            raise ApiError(403, "forbidden", f"keys[{i}] was presigned for another user", f"keys[{i}]")
    assets: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    for key in dict.fromkeys(keys):
        outcome = uploads.complete_upload(key, g.user.id)
        if isinstance(outcome, Asset):
            assets.append({**asset_json(outcome.key, outcome), "upload_key": key})
        else:
            rejected.append({"key": key, "name": outcome.name, "code": outcome.code, "error": outcome.error})
    return jsonify({"assets": assets, "rejected": rejected})
