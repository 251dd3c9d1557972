"""CSRF protection for state changes made with the session cookie.

One random token per session travels back in a hidden form field (`csrf_token`) or, for fetch and
XHR calls, in the `X-CSRF-Token` header; the JSON API accepts only the header. Requests that carry an
Authorization header are exempt: a browser never attaches one cross-site by itself, and web.auth
refuses a bad one before the session is even looked at.
"""

from __future__ import annotations

import hmac
import secrets

from flask import Flask, request, session

FIELD = "csrf_token"
HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# Checked even without a signed-in user: a forged login would sign the victim into our account.
ALWAYS_CHECKED = frozenset({"admin.login"})


class CsrfError(Exception):
    """A state-changing request without the session's token."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def csrf_token() -> str:
    token = session.get(FIELD)
    if not token:
        token = secrets.token_urlsafe(32)
        session[FIELD] = token
    return token


def rotate_token() -> str:
    """A fresh token, e.g. when someone signs in (the old one was handed out to an anonymous visitor)."""
    session[FIELD] = secrets.token_urlsafe(32)
    return session[FIELD]


def protect() -> None:
    """before_request hook: refuse unsafe session requests that lack the token."""
    if request.method in SAFE_METHODS or request.headers.get("Authorization"):
        return
    # A signed storage URL (/files) is its own authority and never acts on the session; a browser
    # PUTting a direct upload there sends its cookie only because the URL is on the same site.
    if request.blueprint == "files":
        return
    if session.get("user_id") is None and request.endpoint not in ALWAYS_CHECKED:
        # Nothing to ride on: the view refuses the anonymous request (redirect to login or 401).
        return
    expected = session.get(FIELD)
    if request.path.startswith("/api/"):
        sent = request.headers.get(HEADER)
        missing = f"send the page's CSRF token in the {HEADER} header (or use a bearer token)"
    else:
        sent = request.headers.get(HEADER) or request.form.get(FIELD)
        missing = "the form has expired or did not come from this site; reload the page and try again"
    if not expected or not sent or not hmac.compare_digest(str(expected), str(sent)):
        raise CsrfError(missing)


def init_app(flask_app: Flask) -> None:
    flask_app.before_request(protect)
    flask_app.jinja_env.globals["csrf_token"] = csrf_token
