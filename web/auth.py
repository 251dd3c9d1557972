"""Who is asking: a bearer token (API) or a logged-in session (admin pages)."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Response, g, redirect, request, session, url_for

from app.db import db
from app.models import User
from app.services.users import user_for_token
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
        user = user_for_token(token.strip())
        if user is None:
            raise ApiError(401, "unauthorized", "the token is invalid or revoked")
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
    """A local path to return to after signing in; anything else goes to the dashboard."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return url_for("admin.dashboard")
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
