"""Limits on a request's size, checked before any handler (or web/textcheck.py) reads the body.

- URI longer than MAX_URI_BYTES: 414, as JSON on /api/ and as the error page elsewhere. gunicorn.conf.py
  lets request lines up to gunicorn's own maximum through, so that the app rather than gunicorn answers;
  a line beyond even that is answered by the worker class in gunicorn.conf.py, in JSON too.
- JSON body larger than MAX_JSON_BYTES: 413 before a byte of it is parsed; a body without a
  Content-Length (chunked) is cut off at the same size while it is read. Uploads are multipart and keep
  their own limits (MAX_UPLOAD_BYTES per file, MAX_CONTENT_LENGTH for the whole request).
"""

from __future__ import annotations

from flask import Flask, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge, RequestURITooLarge

from web.errors import ApiError


def _request_uri() -> str:
    # gunicorn and werkzeug's server pass the URI as sent; other servers leave it to be rebuilt.
    env = request.environ
    return env.get("RAW_URI") or env.get("REQUEST_URI") or request.full_path


def _check_request() -> None:
    cfg = current_app.extensions["bulkgen.settings"]
    api = request.path.startswith("/api/")
    length = len(_request_uri())
    if length > cfg.max_uri_bytes:
        message = f"the request URI is {length} bytes long; the limit is {cfg.max_uri_bytes} bytes"
        if api:
            raise ApiError(414, "uri_too_long", message)
        raise RequestURITooLarge(description=message)
    # A signed PUT to /files carries an object's bytes (a JSON output or manifest too): it has its own limit.
    if request.is_json and request.blueprint != "files":
        limit = cfg.max_json_bytes
        if request.content_length is not None and request.content_length > limit:
            message = f"the JSON body is {request.content_length} bytes; the limit is {limit} bytes (MAX_JSON_BYTES)"
            if api:
                raise ApiError(413, "too_large", message)
            raise RequestEntityTooLarge(description=message)
        request.max_content_length = limit


def init_app(flask_app: Flask) -> None:
    """Register first: every other hook may read the body."""
    flask_app.before_request(_check_request)
