"""Who is asking: a bearer token (API) or a logged-in session (admin pages)."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

from flask import Response, abort, g, redirect, request, session, url_for

from app.db import db
from app.models import Job, User
from app.services.users import token_row
from web.csrf import rotate_token
from web.errors import ApiError


def current_user() -> User | None:
    if "user" in g:
        return g.user
    user = None
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthorized", "use 'Authorization: Bearer <token>'")
        row = token_row(token.strip())
        if row is None:
            raise ApiError(401, "unauthorized", "the token is invalid or revoked")
        user = row.user
        g.token_scope = row.scope
    elif session.get("user_id"):
        user = db.session.get(User, session["user_id"])
        if user is not None and not user.active:
            user = None
    g.user = user
    return user


def api_auth_required(view: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if current_user() is None:
            raise ApiError(401, "unauthorized", "a bearer token is required")
        return view(*args, **kwargs)

    return wrapper


# --- who may do what (docs/reliability.md, "Access model") -----------------------------------

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def read_only_token() -> bool:
    """Whether this API request came with a read-only token (a session acts with its user's role)."""
    return g.get("token_scope") == "read"


def refuse_writes_with_read_only_token() -> None:
    if request.method not in READ_METHODS and read_only_token():
        raise ApiError(
            403,
            "read_only_token",
            "this token is read-only: it may only read (GET); use a token with the write scope",
        )


def may_change_job(user: User | None, job: Job) -> bool:
    """Members change (cancel, retry, pause, resume, reschedule) their own jobs; admins every job."""
    return user is not None and (user.is_admin or (job.created_by is not None and job.created_by == user.id))


def admin_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """For admin-only views: a JSON 403 on /api/, a 403 page elsewhere (anonymous pages go to login)."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if request.path.startswith("/api/"):
            user = current_user()
            if user is None:
                raise ApiError(401, "unauthorized", "a bearer token is required")
            if not user.is_admin:
                raise ApiError(403, "forbidden", "only an admin may do this")
        else:
            user = session_user()
            if user is None:
                return redirect_to_login()
            if not user.is_admin:
                abort(403, "this page is for admins; ask an admin if you need it")
        return view(*args, **kwargs)

    return wrapper


# --- admin pages: the session only ----------------------------------------------------------


def session_user() -> User | None:
    """The signed-in user of the admin pages (bearer tokens do not open pages)."""
    if "page_user" in g:
        return g.page_user
    user = None
    user_id = session.get("user_id")
    if user_id is not None:
        user = db.session.get(User, user_id)
        if user is not None and not user.active:
            user = None
    g.page_user = user
    return user


def login_session(user: User) -> None:
    """Start a fresh session for `user`: nothing an anonymous visitor was handed carries over."""
    session.clear()
    session["user_id"] = user.id
    session.permanent = True
    rotate_token()
    g.page_user = user


def logout_session() -> None:
    session.clear()
    g.page_user = None


def safe_next(target: str | None) -> str:
    """A local path to return to after signing in; anything else goes to the dashboard.

    Judged as a browser reads a Location: it drops tabs and newlines anywhere, strips leading control
    characters and spaces, and takes a backslash for a slash, so `next=/%09/evil.example` (a slash, a
    tab, /evil.example) would lead to //evil.example. Such characters are refused, not repaired: the
    `next` this app makes (redirect_to_login) never holds one.
    """
    fallback = url_for("admin.dashboard")
    if not target or len(target) > 2048 or not target.startswith("/") or target.startswith("//"):
        return fallback
    if "\\" in target or any(c.isspace() or unicodedata.category(c)[0] in "CZ" for c in target):
        return fallback
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return fallback
    return target


def redirect_to_login() -> Response:
    target = request.full_path.rstrip("?") if request.method == "GET" else None
    return redirect(
        url_for("admin.login", next=target) if target and target != "/" else url_for("admin.login")
    )


def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """For page views: anonymous visitors are sent to the login page."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if session_user() is None:
            return redirect_to_login()
        return view(*args, **kwargs)

    return wrapper
