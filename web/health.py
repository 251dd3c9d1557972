"""Liveness (/healthz: the process answers) and readiness (/readyz: its dependencies answer)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, jsonify
from sqlalchemy import text

from app.config import settings
from app.coordination import redis_client
from app.db import db
from app.storage_factory import get_storage

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


def _migrations_current() -> bool:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from app.core import MIGRATIONS_DIR

    config = Config()
    config.set_main_option("script_location", MIGRATIONS_DIR)
    heads = set(ScriptDirectory.from_config(config).get_heads())
    current = {row[0] for row in db.session.execute(text("SELECT version_num FROM alembic_version"))}
    return current == heads


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    checks: dict[str, Any] = {}
    try:
        db.session.execute(text("SELECT 1"))
        checks["database"] = (
            "ok" if _migrations_current() else "migrations pending: run `flask --app web db upgrade`"
        )
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        db.session.rollback()
        checks["database"] = f"unreachable: {type(exc).__name__}"
    try:
        redis_client(settings().broker_url).ping()
        checks["broker"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["broker"] = f"unreachable: {type(exc).__name__}"
    try:
        get_storage().check()
        checks["storage"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["storage"] = f"unreachable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return jsonify({"status": "ready" if ready else "unavailable", "checks": checks}), 200 if ready else 503
