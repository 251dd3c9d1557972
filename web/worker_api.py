"""What GPU and API hosts ask the web app for: storage grants (app/services/grants.py).

A host shows its worker token (`Authorization: Bearer bgw_...`); the token opens these routes
and nothing else. A revoked token is refused at the next request, which stops the host.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from app.services.grants import GrantRefused, read_grant, write_grant
from app.services.worker_tokens import worker_for_token
from web.errors import ApiError

log = logging.getLogger(__name__)
bp = Blueprint("worker_api", __name__, url_prefix="/api/v1/worker")


@bp.before_request
def _worker_token() -> None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    worker = worker_for_token(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
    if worker is None:
        raise ApiError(401, "unauthorized", "the worker token is missing, invalid or revoked")
    g.worker_name = worker


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "send a JSON object")
    return body


def _grant(make: Any) -> Response:
    try:
        return jsonify(make(_body()))
    except GrantRefused as exc:
        # A refusal is normal (a taken-back delivery) or a sign of a misbehaving host: keep a trail.
        log.info("grant refused to worker token %s (%s): %s", g.worker_name, exc.code, exc.message)
        raise ApiError(exc.status, exc.code, exc.message) from exc


@bp.get("/hello")
def hello() -> Response:
    """A host checks its token when it starts (and learns the name it runs under)."""
    return jsonify({"name": g.worker_name})


@bp.post("/grants/read")
def grant_read() -> Response:
    return _grant(read_grant)


@bp.post("/grants/write")
def grant_write() -> Response:
    return _grant(write_grant)
