"""The web app: admin pages and the JSON API. `flask --app web run` finds create_app()."""

from __future__ import annotations

import logging
from datetime import timedelta

import redis
from flask import Flask, Response, g, render_template, request
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from app.config import Settings
from app.core import create_core_app
from app.db import db
from app.errors import InvalidInput
from app.storage_factory import get_storage
from web.csrf import CsrfError
from web.errors import ApiError, error_response
from web.jsonio import OrjsonProvider

log = logging.getLogger(__name__)


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"


# Titles for the HTML error pages; the message comes from the exception where it says something useful.
PAGE_ERRORS = {
    400: ("Bad request", "The request could not be understood."),
    403: ("Not allowed", "You do not have access to this page."),
    404: ("Not found", "There is nothing at this address. It may have been removed, or the link is wrong."),
    405: ("Not allowed", "This address does not accept that kind of request."),
    413: ("Too large", "The request is too large."),
    414: ("Address too long", "The address of this page is too long."),
    429: ("Slow down", "Too many requests; wait a little and try again."),
    500: (
        "Something went wrong",
        "The error was logged. Try again; if it keeps happening, tell an operator.",
    ),
    503: ("Temporarily unavailable", "A service this page needs is unreachable; try again shortly."),
}


# Scripts only from our own static files; media also from the storage's signed URLs (S3 may be elsewhere).
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob: http: https:; media-src 'self' blob: http: https:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'self'; object-src 'none'"
)


def error_page(status: int, message: str | None = None) -> tuple[str, int]:
    title, default = PAGE_ERRORS.get(status, ("Error", "Something went wrong."))
    if "page_user" not in g and status != 503:
        from web.auth import session_user

        try:
            session_user()  # the navigation shows for a signed-in admin
        except Exception:  # noqa: BLE001 - the page must render even when the user cannot be looked up
            db.session.rollback()
            g.page_user = None
    try:
        body = render_template("error.html", code=status, title=title, message=message or default)
    except Exception:  # noqa: BLE001 - the error page itself must not fail: fall back to plain text
        log.exception("could not render the error page")
        body = f"{status} {title}: {message or default}"
    return body, status


def create_app(cfg: Settings | None = None) -> Flask:
    flask_app = create_core_app("web", cfg)
    flask_app.json = OrjsonProvider(flask_app)
    flask_app.config.setdefault("SESSION_COOKIE_SAMESITE", "Lax")
    flask_app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=12)
    # A new-job form carries one field per selected image: room for about 40,000 of them.
    flask_app.config["MAX_FORM_MEMORY_SIZE"] = 4 * 1024 * 1024
    if flask_app.extensions["bulkgen.settings"].public_url.startswith("https://"):
        flask_app.config["SESSION_COOKIE_SECURE"] = True

    from web import api, cli, csrf, files, health, ratelimit, requestlimits, textcheck, views, worker_api

    # Size limits first: every other hook may read the body.
    requestlimits.init_app(flask_app)
    textcheck.init_app(flask_app)
    csrf.init_app(flask_app)
    ratelimit.init_app(flask_app)
    flask_app.register_blueprint(api.bp)
    flask_app.register_blueprint(files.bp)
    flask_app.register_blueprint(worker_api.bp)
    flask_app.register_blueprint(health.bp)
    flask_app.register_blueprint(views.bp)
    from web import metrics

    flask_app.register_blueprint(metrics.bp)
    cli.register(flask_app)

    csp: list[str] = []

    def _page_csp() -> str:
        # Browsers PUT direct uploads to the storage (S3 may be elsewhere): allowed like the app itself.
        if not csp:
            origin = get_storage().upload_origin()
            csp.append(
                PAGE_CSP.replace("connect-src 'self'", f"connect-src 'self' {origin}") if origin else PAGE_CSP
            )
        return csp[0]

    @flask_app.after_request
    def _page_headers(response: Response) -> Response:
        if response.mimetype == "text/html":
            response.headers.setdefault("Content-Security-Policy", _page_csp())
            response.headers.setdefault("X-Frame-Options", "DENY")
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
            response.headers.setdefault("Referrer-Policy", "same-origin")
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @flask_app.errorhandler(CsrfError)
    def _csrf_error(exc: CsrfError) -> tuple[Response | str, int]:
        db.session.rollback()
        if _wants_json():
            return error_response(403, "csrf_failed", exc.message)
        return error_page(403, exc.message[0].upper() + exc.message[1:] + ".")

    @flask_app.errorhandler(redis.exceptions.ConnectionError)
    @flask_app.errorhandler(redis.exceptions.TimeoutError)
    @flask_app.errorhandler(BrokerError)
    def _broker_down(exc: Exception) -> tuple[Response | str, int]:
        db.session.rollback()
        log.error("broker unavailable: %s", exc)
        message = "the broker (Redis) is unreachable; try again shortly"
        if _wants_json():
            return error_response(503, "broker_unavailable", message)
        return error_page(
            503, "The broker (Redis) is unreachable, so this cannot be done right now. Try again shortly."
        )

    @flask_app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> tuple[Response, int]:
        db.session.rollback()
        return error_response(exc.status, exc.code, exc.message, exc.field)

    @flask_app.errorhandler(InvalidInput)
    def _invalid_input(exc: InvalidInput) -> tuple[Response, int]:
        # Subclasses say their own status and code (an idempotency conflict: 409).
        db.session.rollback()
        return error_response(exc.status, exc.code, exc.message, exc.field)

    @flask_app.errorhandler(OperationalError)
    def _db_down(exc: OperationalError) -> tuple[Response | str, int]:
        db.session.rollback()
        log.error("database unavailable: %s", exc.orig)
        if not _wants_json():
            return error_page(503, "The database is unreachable. Nothing was changed; try again shortly.")
        return error_response(503, "database_unavailable", "the database is unreachable; try again shortly")

    @flask_app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response | tuple[Response | str, int]:
        if exc.response is not None:  # an answer made for this error (e.g. the throttled login page)
            return exc.response
        if not _wants_json():
            if exc.code in PAGE_ERRORS:
                described = exc.description if exc.description != type(exc).description else None
                message = described[0].upper() + described[1:] + "." if described else None
                return error_page(exc.code or 500, message)
            return exc.get_response()
        code = (exc.name or "error").lower().replace(" ", "_")
        message = exc.description or exc.name
        if exc.code == 413:
            message = "the request is too large"
        response, status = error_response(exc.code or 500, code, message)
        # A 405 names the methods the address takes (RFC 9110), as werkzeug's own answer does.
        response.headers.extend((k, v) for k, v in exc.get_headers() if k.lower() == "allow")
        return response, status

    @flask_app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response | str, int]:
        db.session.rollback()
        log.exception("unhandled error on %s %s", request.method, request.path)
        if not _wants_json():
            return error_page(500)
        return error_response(500, "internal_error", "something went wrong; the error was logged")

    return flask_app
