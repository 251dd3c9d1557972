"""The minimal Flask app that owns the database: used by the web app and the control worker."""

from __future__ import annotations

import logging
from pathlib import Path

from flask import Flask
from flask_migrate import Migrate

from app import models  # noqa: F401 - registers the tables on db.metadata
from app.config import Settings, settings
from app.db import db, engine_options
from app.logs import configure_logging

MIGRATIONS_DIR = str(Path(__file__).resolve().parent.parent / "migrations")
migrate = Migrate()


def create_core_app(name: str = "bulkgen", cfg: Settings | None = None) -> Flask:
    cfg = cfg or settings()
    if cfg.database_url is None:
        raise RuntimeError(
            "this process has no database settings (NO_DATABASE is set): only the web app and the "
            "control worker talk to the database"
        )
    configure_logging(cfg.log_json)
    flask_app = Flask(name)
    flask_app.config.update(
        SECRET_KEY=cfg.secret_key,
        SQLALCHEMY_DATABASE_URI=cfg.database_url,
        SQLALCHEMY_ENGINE_OPTIONS=engine_options(cfg.database_url),
        MAX_CONTENT_LENGTH=cfg.max_upload_bytes * 50,
    )
    flask_app.extensions["bulkgen.settings"] = cfg
    if cfg.uses_sqlite:
        Path(cfg.database_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    db.init_app(flask_app)
    migrate.init_app(flask_app, db, directory=MIGRATIONS_DIR, render_as_batch=True)
    logging.getLogger(__name__).debug("core app ready on %s", cfg.database_url.split("@")[-1])
    return flask_app
