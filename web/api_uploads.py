"""Direct-to-storage uploads: presigned PUT URLs, then a check of what arrived (routes on the API blueprint).

1. POST /api/v1/uploads/presign {"files": [{"name", "size", "content_type"}, ...]} (up to 1,000)
   answers one URL per file, in order: PUT the file's bytes there with the given headers before
   `expires_at` (the body must be exactly `size` bytes).
2. POST /api/v1/uploads/complete {"keys": [...]} (up to 100) checks each upload as multipart uploads
   are checked and keeps it as an asset; what is not an acceptable image is deleted and listed under
   `rejected`. Completing a key again answers the same asset.

The logic is in app/services/uploads.py; the bodies are app/contract/api.py's models.
"""

from __future__ import annotations

from typing import Any

from flask import Response, g, jsonify

from app.config import settings
from app.contract import api as contract
from app.models import Asset
from app.services import uploads
from web.api import asset_json, bp, parse_body
from web.errors import ApiError


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:.1f}".removesuffix(".0") + " MB"


@bp.post("/uploads/presign")
def presign_uploads() -> Response:
    body = parse_body(contract.PresignRequest)
    s = settings()
    # The model checks shapes; these limits are the deployment's (the document states them too).
    expires_in = s.upload_url_ttl_s if body.expires_in is None else body.expires_in
    if expires_in > s.upload_url_ttl_s:
        raise ApiError(
            400,
            "invalid_parameter",
            f"expires_in must be between 1 and {s.upload_url_ttl_s} seconds",
            "expires_in",
        )
    for i, f in enumerate(body.files):
        if f.size > s.max_upload_bytes:
            where = f"files[{i}].size"
            raise ApiError(
                400,
                "too_large",
                f"{where}: {f.name} is {_mb(f.size)}; the limit is {_mb(s.max_upload_bytes)} "
                f"({s.max_upload_bytes} bytes)",
                where,
            )
    signed = uploads.presign_uploads(
        [(f.name, f.size, f.content_type) for f in body.files], g.user.id, expires_in
    )
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
    keys = parse_body(contract.CompleteRequest).keys
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
