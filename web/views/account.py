"""Signing in and out, and the account page. Users are made with `flask --app web create-user EMAIL`."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from flask import Response, abort, flash, make_response, redirect, render_template, request, url_for
from flask_limiter import RequestLimit

from app.db import db
from app.models import ApiToken, User
from app.services import webhooks
from app.services.users import TOKEN_SCOPES, check_password, create_token, get_user, revoke_token, tokens_of
from web.auth import login_session, logout_session, safe_next, session_user
from web.ratelimit import (
    PER_ACCOUNT,
    PER_ADDRESS,
    PER_ADDRESS_AND_ACCOUNT,
    account_key,
    address_and_account_key,
    address_key,
    failed_sign_in,
    form_email,
    limiter,
)
from web.views import bp, form_text


def _throttled(whose: Callable[[str], str]) -> Callable[[RequestLimit], Response]:
    """The login page again, 429 with Retry-After, when a sign-in limit (web/ratelimit.py) is reached."""

    def on_breach(limit: RequestLimit) -> Response:
        wait = max(1, math.ceil(limit.reset_at - time.time()))
        minutes = max(1, math.ceil(wait / 60))
        email = form_email()
        error = (
            f"Too many failed sign-ins {whose(email)}. "
            f"Try again in {minutes} minute{'s' if minutes != 1 else ''}."
        )
        page = render_template("login.html", next=request.values.get("next") or "", email=email, error=error)
        response = make_response(page, 429)
        response.headers["Retry-After"] = str(wait)
        return response

    return on_breach


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(
    PER_ADDRESS_AND_ACCOUNT,
    key_func=address_and_account_key,
    methods=["POST"],
    deduct_when=failed_sign_in,
    on_breach=_throttled(lambda email: f"for {email or 'this account'}"),
)
@limiter.limit(
    PER_ADDRESS,
    key_func=address_key,
    methods=["POST"],
    deduct_when=failed_sign_in,
    on_breach=_throttled(lambda _: "from your address"),
)
@limiter.limit(
    PER_ACCOUNT,
    key_func=account_key,
    methods=["POST"],
    deduct_when=failed_sign_in,
    on_breach=_throttled(lambda email: f"for {email or 'this account'}"),
)
def login() -> Response | str | tuple[str, int]:
    next_target = request.values.get("next") or ""
    if request.method == "GET":
        if session_user() is not None:
            return redirect(safe_next(next_target))
        return render_template("login.html", next=next_target, email="", error=None)

    email = form_email()
    password = request.form.get("password") or ""
    user = get_user(email) if email else None
    if user is None or not check_password(user, password):
        # The 401 is what the sign-in limits count (web/ratelimit.py).
        return (
            render_template("login.html", next=next_target, email=email, error="Wrong email or password."),
            401,
        )
    login_session(user)
    return redirect(safe_next(next_target))


@bp.post("/logout")
def logout() -> Response:
    logout_session()
    return redirect(url_for("admin.login"))


@bp.get("/account")
def account() -> str | tuple[str, int]:
    return _account_page(session_user())


def _account_page(
    user: User, new_token: str | None = None, token_error: str | None = None
) -> str | tuple[str, int]:
    secret = webhooks.secret_of(user)
    db.session.commit()
    body = render_template(
        "account.html",
        user=user,
        secret=secret,
        events=webhooks.EVENTS,
        tokens=tokens_of(user),
        scopes=TOKEN_SCOPES,
        new_token=new_token,
        token_error=token_error,
        form=request.form,
    )
    return (body, 400) if token_error else body


@bp.post("/account/tokens")
def create_api_token() -> str | tuple[str, int]:
    """A new API token of the signed-in user, shown once on the page that answers (never flashed:
    the flash travels in the session cookie)."""
    user = session_user()
    name = form_text("name")
    scope = request.form.get("scope") or "write"
    if len(name) > 100:
        return _account_page(user, token_error="The name is too long: at most 100 characters.")
    if scope not in TOKEN_SCOPES:
        return _account_page(user, token_error=f"Choose a scope: {' or '.join(TOKEN_SCOPES)}.")
    return _account_page(user, new_token=create_token(user, name, scope))


@bp.post("/account/tokens/<int:token_id>/revoke")
def revoke_api_token(token_id: int) -> Response:
    """Revoke one of your tokens; an admin may revoke anyone's (from the users page)."""
    user = session_user()
    row = db.session.get(ApiToken, token_id)
    if row is None:
        abort(404, f"there is no token {token_id}")
    if row.user_id != user.id and not user.is_admin:
        abort(403, "that token is not yours; an admin can revoke it")
    if revoke_token(token_id):
        flash(f"Token {row.prefix}… revoked: requests with it are refused from now on.", "success")
    else:
        flash(f"Token {row.prefix}… was already revoked.", "info")
    back = "admin.users" if request.form.get("back") == "users" and user.is_admin else "admin.account"
    return redirect(url_for(back))


@bp.post("/account/webhook-secret")
def rotate_webhook_secret() -> Response:
    webhooks.rotate_secret(session_user())
    db.session.commit()
    flash("New signing secret made. The previous one also signs deliveries for the next 24 hours.", "success")
    return redirect(url_for("admin.account"))
